"""The one configuration file: parsed and validated once into frozen, typed settings."""

from __future__ import annotations

import difflib
import grp
import ipaddress
import logging
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certbot_dane.errors import ConfigError
from certbot_dane.tlsa import TlsaParams
from certbot_dane.tsigkey import (
    DEFAULT_ALGORITHM,
    TsigKey,
    canonical_algorithm,
    check_algorithm,
    decode_secret,
    parse_key_file,
)

logger = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/certbot-dane/certbot-dane.toml")
ENV_VAR = "CERTBOT_DANE_CONFIG"

_TOP_KEYS = {"state_dir", "deploy_dir", "letsencrypt_dir", "monitor_group", "dns", "lineage", "status", "mta_sts",
             "reports"}
_DNS_KEYS = {
    "server", "port", "key_file", "key_name", "key_secret", "key_algorithm",
    "nameservers", "timeout", "propagation_timeout",
}
_STATUS_KEYS = {"resolver", "rrsig_warning_days", "endpoint_timeout"}
_REPORTS_KEYS = {"database", "retention_days", "max_size", "status_days"}
_MTA_STS_KEYS = {"mode", "mx", "max_age", "policy_file", "tlsrpt", "ca_file"}
_MTA_STS_MODES = ("enforce", "testing", "none")
_MX_PATTERN_RE = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]*[a-z0-9])?\.?", re.I | re.A)
_LINEAGE_KEYS = {"tlsa", "params", "tlsa_ttl", "reload", "verify", "verify_address", "key_group", "min_wait"}
_VERIFY_SCHEMES = {"smtp": 25, "submission": 587, "submissions": 465, "imap": 143, "imaps": 993,
                   "pop3": 110, "pop3s": 995, "https": 443}
# whole strings are matched with fullmatch (a `$` would let a trailing newline through); ASCII only
_TLSA_NAME_RE = re.compile(r"_([0-9]{1,5})\._(tcp|udp|sctp)\.(?=.*[a-z0-9])[a-z0-9_.-]+\.?", re.I | re.A)
_LINEAGE_RE = re.compile(r"[A-Za-z0-9*_][A-Za-z0-9*_.-]*")
_HOST_NAME_RE = re.compile(r"[A-Za-z0-9.-]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Endpoint:
    """A DNS server to talk to: host (address or name) and port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DnsSettings:
    """Where and how to send updates, and which servers to wait for.

    `key` is None only in a configuration loaded for reading (`load(need_key=False)`: status, check)
    whose key file cannot be read or that names no key; `unkeyed` then says why.
    """

    server: Endpoint
    key: TsigKey | None
    nameservers: tuple[Endpoint, ...]
    timeout: float
    propagation_timeout: float
    unkeyed: str = ""

    def signing_key(self) -> TsigKey:
        """The TSIG key that signs UPDATEs; ConfigError when this configuration was loaded without one."""
        if self.key is None:
            raise ConfigError(f"no TSIG key to sign with ({self.unkeyed}): the configuration was loaded for "
                              "read-only use (status, check)")
        return self.key


@dataclass(frozen=True)
class VerifyTarget:
    """An endpoint to check after a deploy: scheme (smtp, imaps, ...), host and port."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class LineageSettings:
    """One certbot lineage (certificate name) that certbot-dane manages."""

    name: str
    tlsa: tuple[str, ...]
    params: tuple[TlsaParams, ...]
    tlsa_ttl: int | None = None
    reload: tuple[str, ...] = ()
    verify: tuple[VerifyTarget, ...] = ()
    key_group: int | None = None  # gid that may read the deployed private key (mode 0640)
    verify_address: str | None = None  # connect here instead of resolving each verify host
    min_wait: int = 0  # the gate never opens sooner after every server served the new records (seconds)

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host names the TLSA names protect (_25._tcp.mx.example.org. -> mx.example.org)."""
        return tuple(dict.fromkeys(n.split(".", 2)[2].rstrip(".") for n in self.tlsa))


@dataclass(frozen=True)
class StatusSettings:
    """What `status` checks beyond the authoritative servers (the `[status]` table)."""

    #: the validating resolver that shows the sender's view: an address, "system" (the first
    #: nameserver of /etc/resolv.conf) or None ("none": no sender's view)
    resolver: Endpoint | str | None = "system"
    rrsig_warning_days: float = 3.0  # WARNING when a TLSA RRSIG expires within this many days
    endpoint_timeout: float = 10.0   # seconds one TLS check of one address may take


@dataclass(frozen=True)
class MtaStsSettings:
    """One mail domain's MTA-STS policy (RFC 8461) and TLSRPT record (RFC 8460): the `[mta_sts."DOMAIN"]` table."""

    domain: str                      # lower case, no trailing dot
    mode: str                        # enforce | testing | none
    mx: tuple[str, ...] | None       # MX patterns (`mx1.example.org`, `*.mx.example.org`); None: the MX RRset
    max_age: int                     # seconds senders may cache the policy
    policy_file: Path                # what the web server serves at https://mta-sts.DOMAIN/.well-known/mta-sts.txt
    tlsrpt: tuple[str, ...] = ()     # rua URIs of the _smtp._tls record; empty: certbot-dane leaves it alone
    ca_file: Path | None = None      # CA bundle for the HTTPS and SMTP checks; None: the system's


@dataclass(frozen=True)
class ReportsSettings:
    """Where TLSRPT reports are kept and for how long (the `[reports]` table)."""

    database: Path | None = None   # default: <state_dir>/tlsrpt.sqlite3
    retention_days: float = 400.0  # `reports import` deletes reports whose period ended longer ago
    max_size: int = 10 * 1024 * 1024  # bytes a report, a message or a file may take (uncompressed); larger: skipped
    status_days: float = 7.0       # `status` warns about DANE failures in reports that ended this recently

    def path(self, state_dir: Path) -> Path:
        """The SQLite database file."""
        return self.database or state_dir / "tlsrpt.sqlite3"


@dataclass(frozen=True)
class Config:
    """Everything certbot-dane reads from its configuration file."""

    path: Path
    state_dir: Path
    deploy_dir: Path
    dns: DnsSettings
    lineages: dict[str, LineageSettings] = field(default_factory=dict)
    letsencrypt_dir: Path = Path("/etc/letsencrypt")
    # gid that may read the state directory and staged certificates: `status` as a monitoring user
    monitor_group: int | None = field(default=None, kw_only=True)
    status: StatusSettings = field(default_factory=StatusSettings)
    mta_sts: dict[str, MtaStsSettings] = field(default_factory=dict, kw_only=True)
    reports: ReportsSettings = field(default_factory=ReportsSettings, kw_only=True)


def default_path() -> Path:
    """The configuration path: $CERTBOT_DANE_CONFIG, else /etc/certbot-dane/certbot-dane.toml."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load(path: Path | str | None = None, need_key: bool = True) -> Config:
    """Read, parse and validate a configuration file; every problem reported in one ConfigError.

    With `need_key` False (the read-only commands: status, check), a TSIG key file that cannot be
    read, or no key configured, is no problem: `dns.key` is None and `dns.unkeyed` says why. All
    else is validated as always, a key that can be read included.
    """
    path = Path(path) if path is not None else default_path()
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read configuration: {err.strerror}") from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return _Parser(path, need_key).parse(data)


def split_host_port(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[IPv6]`, `[IPv6]:port` or a bare IPv6 address -> (host, port or None).

    ValueError says what is wrong (a bad port, not an address or host name).
    """
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("[...] must hold an IPv6 address") from None
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("not [IPv6] or [IPv6]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a host name, an IPv4 address or a bare IPv6 address (no port possible)
        host = text
    if port_text is not None and (not _PORT_RE.fullmatch(port_text) or not 0 < int(port_text) < 65536):
        raise ValueError("bad port")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME_RE.fullmatch(host):
            raise ValueError("not an address or host name") from None
    return host, int(port_text) if port_text is not None else None


def _world_readable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IROTH)


class _Parser:
    """Collects every problem in the file before raising one ConfigError."""

    def __init__(self, path: Path, need_key: bool = True) -> None:
        self.path = path
        self.need_key = need_key
        self.problems: list[str] = []
        self.unkeyed = ""  # why there is no key, when that is no problem (need_key False)

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{key}: {text}")

    def parse(self, data: dict[str, Any]) -> Config:
        self.unknown(data, _TOP_KEYS, "")
        state_dir = self.path_value(data, "state_dir", "/var/lib/certbot-dane")
        deploy_dir = self.path_value(data, "deploy_dir", "/etc/certbot-dane/live")
        letsencrypt_dir = self.path_value(data, "letsencrypt_dir", "/etc/letsencrypt")
        monitor_group = self.group("monitor_group", data.get("monitor_group"))
        dns = self.dns(self.table(data, "dns", required=True))
        status = self.status(self.table(data, "status"))
        reports = self.reports(self.table(data, "reports"))
        lineages = {}
        for name, table in self.table(data, "lineage").items():
            lineage = self.lineage(name, table)
            if lineage is not None:
                lineages[name] = lineage
        mta_sts = {}
        for domain, table in self.table(data, "mta_sts").items():
            sts = self.mta_sts(domain, table)
            if sts is not None:
                mta_sts[sts.domain] = sts
        if self.problems:
            lines = "\n  ".join(self.problems)
            raise ConfigError(f"{self.path}: {len(self.problems)} problem(s):\n  {lines}")
        assert dns is not None
        return Config(self.path, state_dir, deploy_dir, dns, lineages, letsencrypt_dir, status,
                      monitor_group=monitor_group, mta_sts=mta_sts, reports=reports)

    def mta_sts(self, domain: str, table: Any) -> MtaStsSettings | None:
        """One `[mta_sts."DOMAIN"]` table (RFC 8461 policy, RFC 8460 reporting)."""
        label = f'mta_sts."{domain}"'
        if not _MX_PATTERN_RE.fullmatch(domain) or domain.startswith("*"):
            self.problem(label, "not a domain name like example.org")
            return None
        if not isinstance(table, dict):
            self.problem(label, "must be a table")
            return None
        self.unknown(table, _MTA_STS_KEYS, f"{label}.")
        mode = table.get("mode", "enforce")
        if mode not in _MTA_STS_MODES:
            self.problem(f"{label}.mode", f"must be one of {', '.join(_MTA_STS_MODES)}, not {mode!r}")
        mx = None
        if "mx" in table:
            mx = tuple(p.lower().rstrip(".") for p in self.string_list(table, "mx", f"{label}.mx"))
            for pattern in mx:
                if not _MX_PATTERN_RE.fullmatch(pattern):
                    self.problem(f"{label}.mx", f"{pattern!r} is not a host name or *.domain pattern (RFC 8461 §4.1)")
            if not mx and mode != "none":
                self.problem(f"{label}.mx", "an enforce or testing policy needs at least one MX pattern; "
                                            "leave mx out to use the domain's MX RRset")
        max_age = table.get("max_age", 604800)
        if isinstance(max_age, bool) or not isinstance(max_age, int) or not 0 <= max_age <= 31557600:
            self.problem(f"{label}.max_age", "must be a whole number of seconds from 0 to 31557600 (RFC 8461 §3.2)")
            max_age = 604800
        policy_file = table.get("policy_file")
        if not isinstance(policy_file, str) or not policy_file.startswith("/"):
            self.problem(f"{label}.policy_file", "missing or not an absolute path: the file the web server serves "
                                                 f"at https://mta-sts.{domain}/.well-known/mta-sts.txt")
            policy_file = "/"
        tlsrpt = tuple(self.string_list(table, "tlsrpt", f"{label}.tlsrpt"))
        for uri in tlsrpt:
            if not uri.startswith(("mailto:", "https://")) or any(c in uri for c in ",!; \t") or len(uri) < 9:
                self.problem(f"{label}.tlsrpt", f"{uri!r} is not a mailto: or https:// reporting URI (RFC 8460 §3)")
        ca_file = table.get("ca_file")
        if ca_file is not None and (not isinstance(ca_file, str) or not ca_file.startswith("/")):
            self.problem(f"{label}.ca_file", "must be an absolute path to a PEM CA bundle")
            ca_file = None
        return MtaStsSettings(domain.lower().rstrip("."), mode if mode in _MTA_STS_MODES else "enforce", mx,
                              max_age, Path(policy_file), tlsrpt, Path(ca_file) if ca_file else None)

    def status(self, table: dict[str, Any]) -> StatusSettings:
        self.unknown(table, _STATUS_KEYS, "status.")
        resolver: Endpoint | str | None = "system"
        given = table.get("resolver", "system")
        if given == "none":
            resolver = None
        elif given != "system":
            try:
                host, port = split_host_port(given) if isinstance(given, str) else ("", None)
                if not host:
                    raise ValueError("not a string")
                resolver = Endpoint(host, port or 53)
            except ValueError as err:
                self.problem("status.resolver", f"{given!r}: {err}; give ADDRESS[:PORT], \"system\" or \"none\"")
        numbers = {}
        for key, default in (("rrsig_warning_days", 3.0), ("endpoint_timeout", 10.0)):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                self.problem(f"status.{key}", f"must be a positive number, not {value!r}")
                value = default
            numbers[key] = float(value)
        return StatusSettings(resolver, numbers["rrsig_warning_days"], numbers["endpoint_timeout"])

    def reports(self, table: dict[str, Any]) -> ReportsSettings:
        self.unknown(table, _REPORTS_KEYS, "reports.")
        defaults = ReportsSettings()
        database = table.get("database")
        if database is not None and (not isinstance(database, str) or not database.startswith("/")):
            self.problem("reports.database", "must be an absolute path")
            database = None
        numbers: dict[str, float] = {}
        for key in ("retention_days", "max_size", "status_days"):
            value = table.get(key, getattr(defaults, key))
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                self.problem(f"reports.{key}", f"must be a positive number, not {value!r}")
                value = getattr(defaults, key)
            numbers[key] = value
        return ReportsSettings(Path(database) if database else None, float(numbers["retention_days"]),
                               int(numbers["max_size"]), float(numbers["status_days"]))

    def unknown(self, table: dict[str, Any], known: set[str], prefix: str) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
                self.problem(f"{prefix}{key}", f"unknown key{hint}")

    def table(self, data: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            if required:
                self.problem(f"[{key}]", "missing table")
            return {}
        if not isinstance(value, dict):
            self.problem(key, "must be a table")
            return {}
        return value

    def path_value(self, data: dict[str, Any], key: str, default: str) -> Path:
        value = data.get(key, default)
        if not isinstance(value, str) or not value.startswith("/"):
            self.problem(key, "must be an absolute path")
            return Path(default)
        return Path(value)

    def number(self, data: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            self.problem(f"dns.{key}", f"must be a number from {low:g} to {high:g}")
            return default
        return value

    def dns(self, table: dict[str, Any]) -> DnsSettings | None:
        self.unknown(table, _DNS_KEYS, "dns.")
        if not table:
            return None
        port = int(self.number(table, "port", 53, 1, 65535))
        server = table.get("server")
        primary = Endpoint("", port)
        if not isinstance(server, str) or not server:
            self.problem("dns.server", "missing: the primary's IP address or host name")
        else:
            primary = self.endpoint("dns.server", server, port) or primary
            if "port" in table and primary.port != port:
                self.problem("dns.server", f"{server!r} names port {primary.port} but dns.port is {port}: "
                                           "give the port once")
        nameservers = tuple(self.endpoint("dns.nameservers", v, port)
                            for v in self.string_list(table, "nameservers", "dns.nameservers"))
        key = self.tsig_key(table)
        return DnsSettings(
            server=primary,
            key=key,
            unkeyed=self.unkeyed if key is None else "",
            nameservers=tuple(e for e in nameservers if e is not None),
            timeout=self.number(table, "timeout", 10, 0.1, 600),
            propagation_timeout=self.number(table, "propagation_timeout", 120, 1, 3600),
        )

    def string_list(self, table: dict[str, Any], key: str, label: str) -> list[str]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(label, "must be a list of strings")
            return []
        return value

    def endpoint(self, label: str, text: str, default_port: int) -> Endpoint | None:
        try:
            host, port = split_host_port(text)
        except ValueError as err:
            self.problem(label, f"{text!r}: {err}")
            return None
        return Endpoint(host, default_port if port is None else port)

    def tsig_key(self, table: dict[str, Any]) -> TsigKey | None:
        key_file, secret = table.get("key_file"), table.get("key_secret")
        name, algorithm = table.get("key_name"), table.get("key_algorithm")
        if key_file is not None and secret is not None:
            self.problem("dns.key_file", "give either key_file or key_secret, not both")
            return None
        if key_file is not None:
            return self.key_from_file(key_file, name, algorithm)
        if secret is None:
            self.no_key("dns.key_file", "missing: a TSIG key file (or key_name + key_secret)")
            return None
        if _world_readable(self.path):
            self.problem("dns.key_secret", f"{self.path} holds a secret but is readable by every user; "
                                           f"run: chmod 600 {self.path}")
        if not isinstance(name, str) or not name:
            self.problem("dns.key_name", "missing: the TSIG key name, as the server knows it")
            return None
        return self.make_key("dns.key_secret", name, algorithm or DEFAULT_ALGORITHM, secret)

    def key_from_file(self, key_file: Any, name: Any, algorithm: Any) -> TsigKey | None:
        if not isinstance(key_file, str) or not key_file.startswith("/"):
            self.problem("dns.key_file", "must be an absolute path")
            return None
        path = Path(key_file)
        try:
            text = path.read_text()
            if _world_readable(path):
                self.problem("dns.key_file", f"{path} is readable by every user; run: chmod 600 {path}")
            found = parse_key_file(text, name if isinstance(name, str) else None)
        except OSError as err:
            self.no_key("dns.key_file", f"cannot read {path}: {err.strerror}")
            return None
        except ValueError as err:
            self.problem("dns.key_file", f"{path}: {err}")
            return None
        key_name, file_algorithm, secret = found
        return self.make_key("dns.key_file", key_name, algorithm or file_algorithm, secret)

    def no_key(self, key: str, text: str) -> None:
        """There is no key to load: a problem for the commands that update DNS, a note for read-only ones."""
        if self.need_key:
            self.problem(key, text)
        else:
            self.unkeyed = f"{key}: {text}"

    def make_key(self, label: str, name: str, algorithm: Any, secret: Any) -> TsigKey | None:
        if not isinstance(algorithm, str):
            self.problem("dns.key_algorithm", "must be a string")
            return None
        if bad := check_algorithm(algorithm):
            self.problem("dns.key_algorithm", bad)
            return None
        if not isinstance(secret, str):
            self.problem(label, "the secret must be a string")
            return None
        try:
            raw = decode_secret(secret)
        except ValueError as err:
            self.problem(label, str(err))
            return None
        algorithm = canonical_algorithm(algorithm)
        if algorithm in ("hmac-md5", "hmac-sha1"):
            logger.warning("TSIG key %s uses %s, which is obsolete; make a new one with "
                           "`tsig-keygen -a hmac-sha256 %s`", name, algorithm, name)
        return TsigKey(name if name.endswith(".") else name + ".", algorithm, raw)

    def lineage(self, name: str, table: Any) -> LineageSettings | None:
        label = f'lineage."{name}"'
        if not _LINEAGE_RE.fullmatch(name) or ".." in name:
            self.problem(label, "a lineage name is a certbot certificate name: no '/', no '..'")
            return None
        if not isinstance(table, dict):
            self.problem(label, "must be a table")
            return None
        self.unknown(table, _LINEAGE_KEYS, f"{label}.")
        names = self.string_list(table, "tlsa", f"{label}.tlsa")
        for tlsa_name in names:
            if not _TLSA_NAME_RE.fullmatch(tlsa_name) or not 0 < int(tlsa_name[1:].split(".")[0]) < 65536:
                self.problem(f"{label}.tlsa", f"{tlsa_name!r} is not a TLSA name like _25._tcp.mx.example.org")
        params = []
        for text in self.string_list(table, "params", f"{label}.params") or ["3 0 1"]:
            try:
                params.append(TlsaParams.from_text(text))
            except ValueError as err:
                self.problem(f"{label}.params", str(err))
        ttl = table.get("tlsa_ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 86400):
            self.problem(f"{label}.tlsa_ttl", "must be a whole number of seconds from 1 to 86400")
            ttl = None
        min_wait = table.get("min_wait", 0)
        if isinstance(min_wait, bool) or not isinstance(min_wait, int) or not 0 <= min_wait <= 30 * 86400:
            self.problem(f"{label}.min_wait", "must be a whole number of seconds from 0 to 2592000 (30 days)")
            min_wait = 0
        canonical = tuple(n.lower().rstrip(".") + "." for n in names)
        reload = tuple(self.string_list(table, "reload", f"{label}.reload"))
        verify = tuple(v for v in (self.verify_target(label, t) for t in
                                   self.string_list(table, "verify", f"{label}.verify")) if v)
        address = table.get("verify_address")
        if isinstance(address, str) and address.startswith("[") and address.endswith("]"):
            address = address[1:-1]  # an IPv6 address written as in a URL
        if address is not None:
            try:
                if not isinstance(address, str):
                    raise ValueError(address)
                ipaddress.ip_address(address)
            except ValueError:
                self.problem(f"{label}.verify_address", f"{address!r} is not an IP address")
                address = None
        return LineageSettings(name, canonical, tuple(params), ttl, reload, verify,
                               self.group(f"{label}.key_group", table.get("key_group")), address, min_wait)

    def verify_target(self, label: str, text: str) -> VerifyTarget | None:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in _VERIFY_SCHEMES or not rest.rstrip("/"):
            self.problem(f"{label}.verify", f"{text!r} is not SCHEME://HOST[:PORT] with SCHEME one of "
                         f"{', '.join(_VERIFY_SCHEMES)}")
            return None
        try:
            host, port = split_host_port(rest.rstrip("/"))
        except ValueError as err:
            self.problem(f"{label}.verify", f"{text!r}: {err}")
            return None
        return VerifyTarget(scheme, host, _VERIFY_SCHEMES[scheme] if port is None else port)

    def group(self, key: str, value: Any) -> int | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(key, "must be a group name")
            return None
        try:
            return grp.getgrnam(value).gr_gid
        except KeyError:
            self.problem(key, f"no group named {value!r} on this system")
            return None
