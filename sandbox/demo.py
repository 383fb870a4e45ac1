"""The demo: a whole DANE rollover on a local sandbox (real BIND, real Pebble, real certbot).

Run it with `make demo`. Issue with `-a dane -i dane`, renew, stage and pre-publish, wait two
(short) TTLs, deploy, retire, showing the TLSA RRset and `certbot-dane status` at each phase.
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

from sandbox.servers import Sandbox

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


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="certbot-dane-demo-"))
    with Sandbox(base, pebble=True) as box:
        reloads = base / "reloads.log"
        config = box.write_config(base / "certbot-dane.toml", lineages={LINEAGE: TLSA}, lineage_extra="\n".join([
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
        run([*cli, "status"], env, ok=(0, 1, 2))
        print(f"\nreload command ran {reloads.read_text().count('reloaded')} times; services read "
              f"{base / 'live' / LINEAGE}/ -> {os.readlink(base / 'live' / LINEAGE)}")
    banner("done: the whole rollover ran on real BIND and Pebble; the sandbox is stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
