"""Configuration: valid files become typed settings, every problem is reported in one message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certbot_dane import config
from certbot_dane.config import Endpoint, VerifyTarget
from certbot_dane.errors import ConfigError
from certbot_dane.tlsa import TlsaParams

SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "tsig.key"
    path.write_text(f'key "certbot-dane." {{\n\talgorithm hmac-sha512;\n\tsecret "{SECRET}";\n}};\n')
    path.chmod(0o600)
    return path


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "certbot-dane.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_full_config_is_parsed_into_typed_settings(tmp_path, key_file):
    path = write(tmp_path, f'''
state_dir = "/tmp/s"
deploy_dir = "/tmp/d"
[dns]
server = "192.0.2.53"
port = 5353
key_file = "{key_file}"
nameservers = ["192.0.2.1", "192.0.2.2:5300", "[2001:db8::1]:53", "ns1.example.org"]
timeout = 3
propagation_timeout = 30
[lineage."mx.example.org"]
tlsa = ["_25._tcp.MX.example.org.", "_465._tcp.mx.example.org"]
params = ["3 1 1", "2 1 1"]
tlsa_ttl = 300
''')
    cfg = config.load(path)
    assert cfg.state_dir == Path("/tmp/s") and cfg.deploy_dir == Path("/tmp/d")
    assert cfg.dns.server == Endpoint("192.0.2.53", 5353)
    assert (cfg.dns.key.name, cfg.dns.key.algorithm) == ("certbot-dane.", "hmac-sha512")
    assert cfg.dns.nameservers == (Endpoint("192.0.2.1", 5353), Endpoint("192.0.2.2", 5300),
                                   Endpoint("2001:db8::1", 53), Endpoint("ns1.example.org", 5353))
    assert (cfg.dns.timeout, cfg.dns.propagation_timeout) == (3, 30)
    lineage = cfg.lineages["mx.example.org"]
    assert lineage.tlsa == ("_25._tcp.mx.example.org.", "_465._tcp.mx.example.org.")
    assert lineage.params == (TlsaParams(3, 1, 1), TlsaParams(2, 1, 1))
    assert lineage.tlsa_ttl == 300
    assert lineage.min_wait == 0


def test_defaults(tmp_path, key_file):
    cfg = config.load(write(tmp_path, f'[dns]\nserver = "ns.example.org"\nkey_file = "{key_file}"\n'
                                      '[lineage."a.example.org"]\ntlsa = ["_25._tcp.a.example.org"]\n'))
    assert cfg.state_dir == Path("/var/lib/certbot-dane")
    assert cfg.deploy_dir == Path("/etc/certbot-dane/live")
    assert cfg.dns.server == Endpoint("ns.example.org", 53)
    assert cfg.dns.nameservers == () and cfg.dns.timeout == 10
    assert cfg.lineages["a.example.org"].params == (TlsaParams(3, 0, 1),)


def test_inline_key_defaults_to_hmac_sha256(tmp_path):
    cfg = config.load(write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_name = "k"\nkey_secret = "{SECRET}"\n'))
    assert (cfg.dns.key.name, cfg.dns.key.algorithm) == ("k.", "hmac-sha256")


def test_environment_variable_names_the_default_file(tmp_path, key_file, monkeypatch):
    path = write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_file = "{key_file}"\n')
    monkeypatch.setenv(config.ENV_VAR, str(path))
    assert config.load().path == path


@pytest.mark.parametrize("body, problems", [
    ('[dns]\nserver = "127.0.0.1"\nkey_fiel = "/x"\n', ["dns.key_fiel: unknown key (did you mean dns.key_file?)",
                                                        "dns.key_file: missing"]),
    ('stat_dir = "/x"\n[dns]\nserver = "127.0.0.1"\nkey_file = "KEY"\n', ["did you mean state_dir?"]),
    ('[dns]\nkey_file = "KEY"\n', ["dns.server: missing"]),
    ('[dns]\nserver = "127.0.0.1"\nport = 70000\nkey_file = "KEY"\n', ["dns.port: must be a number from 1 to 65535"]),
    ('[dns]\nserver = "127.0.0.1"\nkey_file = "KEY"\nkey_algorithm = "hmac-sha3"\n', ["unknown TSIG algorithm"]),
    ('[dns]\nserver = "127.0.0.1"\nkey_name = "k"\nkey_secret = "%%%"\n', ["not valid base64"]),
    ('[dns]\nserver = "127.0.0.1"\nkey_file = "/nonexistent/tsig.key"\n', ["cannot read /nonexistent/tsig.key"]),
    ('[dns]\nserver = "127.0.0.1"\nkey_file = "KEY"\nnameservers = ["1.2.3.4:0"]\n', ["bad port"]),
    ('[dns]\nserver = "127.0.0.1"\nkey_file = "KEY"\n[lineage."a/../b"]\ntlsa = []\n', ["no '/', no '..'"]),
    ('[dns]\nserver = "127.0.0.1"\nkey_file = "KEY"\n[lineage."mx"]\ntlsa = ["mx.example.org", "_99999._tcp.x.org"]\n',
     ["'mx.example.org' is not a TLSA name", "'_99999._tcp.x.org' is not a TLSA name"]),
    ('[dns]\nserver = "127.0.0.1"\nkey_file = "KEY"\n[lineage."mx"]\ntlsa = ["_25._tcp.mx.org"]\nparams = ["3 0 3"]\n',
     ["matching type must be 1"]),
    ('[dns]\nserver = "127.0.0.1"\nkey_file = "KEY"\n[lineage."mx"]\ntlsa = ["_25._tcp.mx.org"]\ntls_ttl = 5\n',
     ["did you mean lineage.\"mx\".tlsa_ttl?"]),
    ('state_dir = "relative"\n', ["state_dir: must be an absolute path", "[dns]: missing table"]),
    ('[dns]\nserver = "127.0.0.1"\nkey_file = "KEY"\n[lineage."mx"]\ntlsa = ["_25._tcp.mx.org"]\nmin_wait = -1\n',
     ['lineage."mx".min_wait: must be a whole number of seconds from 0']),
])
def test_every_problem_is_named_in_one_error(tmp_path, key_file, body, problems):
    path = write(tmp_path, body.replace("KEY", str(key_file)))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for problem in problems:
        assert problem in message
    assert SECRET not in message


def test_malformed_toml_names_file_and_line(tmp_path):
    path = write(tmp_path, '[dns\nserver = 1\n')
    with pytest.raises(ConfigError, match=r"certbot-dane.toml: not valid TOML: .*line 1"):
        config.load(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: cannot read configuration: No such file"):
        config.load(tmp_path / "nope.toml")


def test_world_readable_key_file_is_refused_with_the_fix(tmp_path, key_file):
    key_file.chmod(0o644)
    path = write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_file = "{key_file}"\n')
    with pytest.raises(ConfigError, match=f"readable by every user; run: chmod 600 {key_file}"):
        config.load(path)


def test_group_readable_key_file_is_accepted(tmp_path, key_file):
    key_file.chmod(0o640)
    path = write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_file = "{key_file}"\n')
    assert config.load(path).dns.key.name == "certbot-dane."


def test_world_readable_config_holding_a_secret_is_refused(tmp_path):
    path = write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_name = "k"\nkey_secret = "{SECRET}"\n', 0o644)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert f"chmod 600 {path}" in str(info.value) and SECRET not in str(info.value)


def test_world_readable_config_without_secret_is_fine(tmp_path, key_file):
    path = write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_file = "{key_file}"\n', 0o644)
    assert config.load(path).path == path
    assert os.stat(path).st_mode & 0o004


def test_bracketed_ipv6_literals_are_accepted_wherever_a_host_and_port_are_given(tmp_path, key_file):
    path = write(tmp_path, f'''
[dns]
server = "[2001:db8::53]"
key_file = "{key_file}"
nameservers = ["[2001:db8::1]", "2001:db8::2", "[2001:db8::3]:5300", "ns1.example.org:5301"]
[lineage."mx.example.org"]
tlsa = ["_25._tcp.mx.example.org"]
verify = ["smtp://[2001:db8::1]", "submissions://[2001:db8::1]:4465/", "imaps://mx.example.org", "pop3s://192.0.2.1:9995"]
verify_address = "[2001:db8::25]"
''')
    cfg = config.load(path)
    assert cfg.dns.server == Endpoint("2001:db8::53", 53)
    assert cfg.dns.nameservers == (Endpoint("2001:db8::1", 53), Endpoint("2001:db8::2", 53),
                                   Endpoint("2001:db8::3", 5300), Endpoint("ns1.example.org", 5301))
    lineage = cfg.lineages["mx.example.org"]
    assert lineage.verify == (VerifyTarget("smtp", "2001:db8::1", 25), VerifyTarget("submissions", "2001:db8::1", 4465),
                              VerifyTarget("imaps", "mx.example.org", 993), VerifyTarget("pop3s", "192.0.2.1", 9995))
    assert [str(v) for v in lineage.verify[:2]] == ["smtp://[2001:db8::1]:25", "submissions://[2001:db8::1]:4465"]
    assert lineage.verify_address == "2001:db8::25"


def test_the_primary_may_carry_its_port(tmp_path, key_file):
    cfg = config.load(write(tmp_path, f'[dns]\nserver = "[2001:db8::53]:5353"\nkey_file = "{key_file}"\n'
                                      'nameservers = ["192.0.2.1"]\n'))
    assert cfg.dns.server == Endpoint("2001:db8::53", 5353)
    assert cfg.dns.nameservers == (Endpoint("192.0.2.1", 53),)


@pytest.mark.parametrize("line, problem", [
    ('server = "192.0.2.53:5353"\nport = 53', "dns.server: '192.0.2.53:5353' names port 5353 but dns.port is 53"),
    ('server = "[2001:db8::53]:0"', "dns.server: '[2001:db8::53]:0': bad port"),
    ('server = "ns1.example.org:"', "dns.server: 'ns1.example.org:': bad port"),
    ('server = "ns1 example.org"', "dns.server: 'ns1 example.org': not an address or host name"),
    ('server = "127.0.0.1"\nnameservers = ["[ns1.example.org]:53"]', "'[ns1.example.org]:53': [...] must hold an IPv6"),
    ('server = "127.0.0.1"\nnameservers = ["[2001:db8::1"]', "'[2001:db8::1': not [IPv6] or [IPv6]:PORT"),
    ('server = "127.0.0.1"\nnameservers = ["[2001:db8::1]53"]', "not [IPv6] or [IPv6]:PORT"),
    ('server = "127.0.0.1"\nnameservers = ["192.0.2.1:\u00b2"]', "'192.0.2.1:\u00b2': bad port"),
    ('server = "127.0.0.1"\nnameservers = ["192.0.2.1:53\\n"]', "bad port"),
    ('server = "127.0.0.1"\nnameservers = ["ns1.example.org\\n"]', "not an address or host name"),
])
def test_bad_host_and_port_is_named_with_its_key(tmp_path, key_file, line, problem):
    path = write(tmp_path, f'[dns]\n{line}\nkey_file = "{key_file}"\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert problem in str(info.value)


@pytest.mark.parametrize("lineage, problem", [
    ('[lineage."mx"]\ntlsa = ["_25._tcp.mx.org"]\nverify = ["smtp://[2001:db8::1]:0"]',
     "'smtp://[2001:db8::1]:0': bad port"),
    ('[lineage."mx"]\ntlsa = ["_25._tcp.mx.org"]\nverify = ["smtp://[mx.org]"]', "must hold an IPv6 address"),
    ('[lineage."mx"]\ntlsa = ["_25._tcp.mx.org"]\nverify = ["smtp://mx.org:25\\n"]', "bad port"),
    ('[lineage."mx"]\ntlsa = ["_25._tcp.mx.org"]\nverify = ["smtp://mx.org/x"]', "not an address or host name"),
    ('[lineage."mx"]\ntlsa = ["_25._tcp.mx.org"]\nverify = ["smtp://"]', "is not SCHEME://HOST[:PORT]"),
    ('[lineage."mx"]\ntlsa = ["_25._tcp.mx.org"]\nverify_address = 5', "5 is not an IP address"),
    ('[lineage."mx\\n"]\ntlsa = ["_25._tcp.mx.org"]', "a lineage name is a certbot certificate name"),
    ('[lineage."mx"]\ntlsa = ["_25._tcp.mx.org\\n"]', "is not a TLSA name"),
    ('[lineage."mx"]\ntlsa = ["_25._tcp.mx.\u212a.org"]', "is not a TLSA name"),  # KELVIN SIGN, a `k` to re.I
    ('[lineage."mx"]\ntlsa = ["_\u0662\u0665._tcp.mx.org"]', "is not a TLSA name"),  # ARABIC-INDIC 25, a \\d
])
def test_bad_lineage_values_are_refused_whole_strings_only(tmp_path, key_file, lineage, problem):
    path = write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_file = "{key_file}"\n{lineage}\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert problem in str(info.value)


def test_read_only_load_needs_no_readable_key_but_keyed_commands_still_refuse(tmp_path, key_file):
    missing = tmp_path / "nope" / "tsig.key"
    path = write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_file = "{missing}"\n')
    with pytest.raises(ConfigError, match=f"dns.key_file: cannot read {missing}: No such file"):
        config.load(path)
    cfg = config.load(path, need_key=False)
    assert cfg.dns.key is None and cfg.dns.unkeyed == f"dns.key_file: cannot read {missing}: No such file or directory"
    with pytest.raises(ConfigError, match=r"no TSIG key to sign with \(dns.key_file: cannot read .*read-only use"):
        cfg.dns.signing_key()


def test_read_only_load_without_any_key_configured(tmp_path):
    cfg = config.load(write(tmp_path, '[dns]\nserver = "127.0.0.1"\n'), need_key=False)
    assert cfg.dns.key is None and cfg.dns.unkeyed.startswith("dns.key_file: missing")


def test_read_only_load_still_validates_everything_else_and_a_key_it_can_read(tmp_path, key_file):
    path = write(tmp_path, '[dns]\nserver = "127.0.0.1"\nkey_file = "/nonexistent/k"\nport = 0\n')
    with pytest.raises(ConfigError, match="dns.port: must be a number") as info:
        config.load(path, need_key=False)
    assert "key_file" not in str(info.value)
    key_file.chmod(0o644)
    path = write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_file = "{key_file}"\n')
    with pytest.raises(ConfigError, match="readable by every user"):
        config.load(path, need_key=False)
    key_file.chmod(0o600)
    assert config.load(path, need_key=False).dns.signing_key().name == "certbot-dane."


def test_monitor_group_is_a_group_name_resolved_to_its_gid(tmp_path, key_file):
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    body = f'[dns]\nserver = "127.0.0.1"\nkey_file = "{key_file}"\n'
    assert config.load(write(tmp_path, body)).monitor_group is None
    assert config.load(write(tmp_path, f'monitor_group = "{group}"\n' + body)).monitor_group == os.getgid()
    with pytest.raises(ConfigError, match="monitor_group: no group named 'no-such-group-x' on this system"):
        config.load(write(tmp_path, 'monitor_group = "no-such-group-x"\n' + body))
    with pytest.raises(ConfigError, match="monitor_group: must be a group name"):
        config.load(write(tmp_path, 'monitor_group = 7\n' + body))


def test_mta_sts_tables_become_typed_settings(tmp_path, key_file):
    cfg = config.load(write(tmp_path, f'''
[dns]
server = "127.0.0.1"
key_file = "{key_file}"
[mta_sts."Example.org"]
mode = "testing"
mx = ["mx1.example.org", "*.MX.example.org."]
max_age = 86400
policy_file = "/var/www/mta-sts/.well-known/mta-sts.txt"
tlsrpt = ["mailto:tlsrpt@example.org", "https://reports.example.org/v1"]
ca_file = "/etc/ssl/certs/ca-certificates.crt"
[mta_sts."example.net"]
policy_file = "/srv/net.txt"
'''))
    org, net = cfg.mta_sts["example.org"], cfg.mta_sts["example.net"]
    assert (org.mode, org.mx, org.max_age) == ("testing", ("mx1.example.org", "*.mx.example.org"), 86400)
    assert org.policy_file == Path("/var/www/mta-sts/.well-known/mta-sts.txt")
    assert org.tlsrpt == ("mailto:tlsrpt@example.org", "https://reports.example.org/v1")
    assert org.ca_file == Path("/etc/ssl/certs/ca-certificates.crt")
    assert (net.mode, net.mx, net.max_age, net.tlsrpt, net.ca_file) == ("enforce", None, 604800, (), None)


def test_every_mta_sts_problem_is_named_in_one_error(tmp_path, key_file):
    path = write(tmp_path, f'''
[dns]
server = "127.0.0.1"
key_file = "{key_file}"
[mta_sts."example.org"]
mode = "strict"
mx = ["mx1..example.org", "*.*.example.org"]
max_age = 99999999
tlsrpt = ["tlsrpt@example.org"]
polcy_file = "/x"
[mta_sts."*.example.net"]
policy_file = "/x"
[mta_sts."example.com"]
mx = []
policy_file = "relative"
''')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    for problem in ['mta_sts."example.org".mode: must be one of enforce, testing, none',
                    "'mx1..example.org' is not a host name", "'*.*.example.org' is not a host name",
                    "max_age: must be a whole number of seconds from 0 to 31557600",
                    "'tlsrpt@example.org' is not a mailto: or https:// reporting URI",
                    'polcy_file: unknown key (did you mean mta_sts."example.org".policy_file?)',
                    'mta_sts."example.org".policy_file: missing', 'mta_sts."*.example.net": not a domain name',
                    'mta_sts."example.com".mx: an enforce or testing policy needs at least one MX pattern',
                    'mta_sts."example.com".policy_file: missing or not an absolute path']:
        assert problem in message


def test_the_reports_table_has_defaults_and_takes_its_settings(tmp_path, key_file):
    base = f'[dns]\nserver = "127.0.0.1"\nkey_file = "{key_file}"\n'
    default = config.load(write(tmp_path, base)).reports
    assert (default.database, default.retention_days, default.max_size, default.status_days) == (
        None, 400.0, 10 * 1024 * 1024, 7.0)
    assert default.path(Path("/var/lib/certbot-dane")) == Path("/var/lib/certbot-dane/tlsrpt.sqlite3")
    given = config.load(write(tmp_path, base + '[reports]\ndatabase = "/srv/tlsrpt.db"\nretention_days = 30\n'
                                              'max_size = 1000\nstatus_days = 1.5\n')).reports
    assert (given.path(Path("/x")), given.retention_days, given.max_size, given.status_days) == (
        Path("/srv/tlsrpt.db"), 30.0, 1000, 1.5)


def test_every_reports_problem_is_named_in_one_error(tmp_path, key_file):
    path = write(tmp_path, f'[dns]\nserver = "127.0.0.1"\nkey_file = "{key_file}"\n[reports]\n'
                           'database = "relative.db"\nretention_days = 0\nmax_size = true\nretention = 3\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    for problem in ("reports.database: must be an absolute path", "reports.retention_days: must be a positive number",
                    "reports.max_size: must be a positive number, not True",
                    "reports.retention: unknown key (did you mean reports.retention_days?)"):
        assert problem in str(info.value)
