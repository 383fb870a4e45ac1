"""The demo: a whole DANE rollover on a local sandbox (real BIND, real Pebble, real certbot).

Run it with `make demo`. Issue with `-a dane -i dane`, renew, stage and pre-publish, wait two
(short) TTLs, deploy, retire, showing the TLSA RRset and `certbot-dane status` at each phase. Next to it
(as root, with nginx installed), example.org's MTA-STS policy: served by nginx over HTTPS with a Pebble
certificate, its `_mta-sts` id and `_smtp._tls` record published by the same `certbot-dane deploy` runs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.query
import dns.update

from certbot_dane import mtasts
from certbot_dane.mtasts_io import fetch
from sandbox.servers import PRIMARY_ADDRESS, Sandbox
from sandbox.webserver import Nginx, pick_address

DOMAIN = "example.org"
LINEAGE = "mx.example.org"
TLSA = [f"_25._tcp.{LINEAGE}", f"_465._tcp.{LINEAGE}"]
TTL = 3
BIN = Path(sys.executable).parent
NOISE = ("Saving debug log", "Account registered", "warnings.warn(", "- - - -")


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def show(command: list[str], result: subprocess.CompletedProcess[str]) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
    for line in (result.stdout + result.stderr).strip().splitlines():
        if not line.strip().startswith(NOISE):
            print("  " + line)


def run(command: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    quiet = {"PYTHONWARNINGS": "ignore::Warning"}  # certbot's --no-verify-ssl warnings, local Pebble only
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **quiet, **env})
    show(command, result)
    if result.returncode not in ok:
        sys.exit(f"demo: {command[0]} failed with exit status {result.returncode}")
    return result


def tlsa(box: Sandbox) -> None:
    for name in TLSA:
        values = box.primary.query(name, "TLSA")
        print(f"  dig @127.0.0.1 -p {box.port} {name} TLSA:")
        for value in values or ["(no records)"]:
            print(f"      {value[:26]}..")


class MtaSts:
    """example.org's MTA-STS side of the demo: nginx serving the policy certbot-dane writes (root and nginx only)."""

    def __init__(self, box: Sandbox, base: Path) -> None:
        self.box, self.base = box, base
        self.enabled = os.geteuid() == 0 and not Nginx.missing()
        self.root = base / "www"
        self.ca = base / "pebble-root.pem"
        self.address = pick_address() if self.enabled else ""
        self.nginx: Nginx | None = None

    def table(self) -> str:
        """The configuration's [mta_sts."example.org"] table (the policy lists the MX RRset)."""
        if not self.enabled:
            return ""
        return "\n".join(['[mta_sts."example.org"]', 'mode = "enforce"', "max_age = 86400",
                          f'policy_file = "{self.root}/.well-known/mta-sts.txt"',
                          'tlsrpt = ["mailto:tlsrpt@example.org"]', f'ca_file = "{self.ca}"'])

    def start(self, env: dict[str, str], config: Path) -> None:
        """The admin's part: MX and mta-sts A records, a certificate for mta-sts.example.org, nginx."""
        if not self.enabled:
            print("(MTA-STS part skipped: it needs root and nginx: apt-get install nginx)")
            return
        update = dns.update.UpdateMessage(DOMAIN, keyring=self.box.admin_key.as_dnspython())
        update.add(f"{DOMAIN}.", 60, "MX", f"10 {LINEAGE}.")
        update.add(f"mta-sts.{DOMAIN}.", 60, "A", self.address)
        dns.query.tcp(update, PRIMARY_ADDRESS, port=self.box.port, timeout=10)
        print(f"  the admin added {DOMAIN} MX 10 {LINEAGE}. and mta-sts.{DOMAIN} A {self.address}")
        run(self.box.certbot_command("certonly", "-a", "dane", "--dane-config", str(config),
                                     "--cert-name", f"mta-sts.{DOMAIN}", "-d", f"mta-sts.{DOMAIN}"), env)
        assert self.box.pebble is not None
        self.ca.write_text(self.box.pebble.root_pem(), encoding="ascii")
        self.base.chmod(0o755)
        self.root.mkdir(mode=0o755)
        live = self.box.base / "certbot" / "config" / "live" / f"mta-sts.{DOMAIN}"
        self.nginx = Nginx(self.address, live / "fullchain.pem", live / "privkey.pem", {DOMAIN: self.root}).start()
        print(f"  nginx serves https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt on {self.address}:443")

    def show(self) -> None:
        """What a sender sees: the TXT records and the policy fetched over HTTPS (validated against Pebble's root)."""
        if self.nginx is None:
            return
        for name in (mtasts.sts_name(DOMAIN), mtasts.tlsrpt_name(DOMAIN)):
            values = [mtasts.txt_text(v) for v in self.box.primary.query(name, "TXT")]
            print(f"  dig @127.0.0.1 -p {self.box.port} {name} TXT: {', '.join(values) or '(no records)'}")
        got = fetch(DOMAIN, self.address, self.ca, 10)
        print(f"  GET {mtasts.policy_url(DOMAIN)} (id {mtasts.policy_id(got.text) if got.text else '-'}):")
        for line in (got.text or got.error or "").splitlines():
            print(f"      {line}")

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="certbot-dane-demo-"))
    with Sandbox(base, pebble=True) as box:
        reloads = base / "reloads.log"
        sts = MtaSts(box, base)
        config = box.write_config(base / "certbot-dane.toml", lineages={LINEAGE: TLSA}, extra=sts.table(),
                                  lineage_extra="\n".join([
                                      f"tlsa_ttl = {TTL}", f'reload = ["sh -c \'echo reloaded >> {reloads}\'"]']))
        env = {"CERTBOT_DANE_CONFIG": str(config), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        cli = [str(BIN / "certbot-dane"), "-c", str(config)]
        print(f"sandbox in {base}: named (DNSSEC-signed example.org) on 127.0.0.1:{box.port}, Pebble at "
              f"{box.pebble.directory_url if box.pebble else '-'}")
        print(f"configuration {config}:\n" + "".join(f"  {line}\n" for line in config.read_text().splitlines()))

        banner("1. issue through DNS-01 (-a dane), install (-i dane): bootstrap deploys at once")
        run(box.certbot_command("run", "-a", "dane", "-i", "dane", "--dane-config", str(config),
                                "--cert-name", LINEAGE, "-d", LINEAGE), env)
        tlsa(box)

        banner("1b. MTA-STS: the admin's nginx serves mta-sts.example.org; a deploy run publishes the policy")
        sts.start(env, config)
        if sts.enabled:
            run([*cli, "deploy"], env)
            sts.show()
            print("  (no SMTP server listens for mx.example.org in this demo: status says mx-unreachable)")
        run([*cli, "status"], env, ok=(0, 1, 2))

        banner("2. renewal: the new certificate is staged and its records pre-published")
        run(box.certbot_command("renew", "--force-renewal", "--cert-name", LINEAGE), env)
        for name in TLSA:
            box.primary.wait_for(name, "TLSA", lambda v: len(v) == 2)
        tlsa(box)

        banner("3. the timer runs `certbot-dane deploy`: too early, the gate holds")
        run([*cli, "deploy"], env)
        run([*cli, "status"], env, ok=(0, 1, 2))

        staged = json.loads((base / "state" / "lineages" / f"{LINEAGE}.json").read_text())["staged"]
        if staged["served_at"] is None:  # the primary was still signing at the first look
            run([*cli, "deploy"], env)
            staged = json.loads((base / "state" / "lineages" / f"{LINEAGE}.json").read_text())["staged"]
        safe = staged["served_at"] + 2 * TTL
        banner(f"4. waiting {max(0.0, safe - time.time()):.1f}s: two TTLs of {TTL}s after every server served it")
        time.sleep(max(0.0, safe - time.time()) + 0.1)

        banner("5. `certbot-dane deploy` again: swap, reload, retire the old records")
        run([*cli, "deploy"], env)
        for name in TLSA:
            box.primary.wait_for(name, "TLSA", lambda v: len(v) == 1)
        tlsa(box)
        sts.show()  # the same policy, the same id: a TLSA rollover changes nothing a MTA-STS sender sees
        run([*cli, "status"], env, ok=(0, 1, 2))
        sts.stop()
        print(f"\nreload command ran {reloads.read_text().count('reloaded')} times; services read "
              f"{base / 'live' / LINEAGE}/ -> {os.readlink(base / 'live' / LINEAGE)}")
    banner("done: the whole rollover ran on real BIND and Pebble; the sandbox is stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
