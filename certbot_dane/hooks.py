"""Entry points for certbot's hooks: --manual-auth-hook, --manual-cleanup-hook and --deploy-hook."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from certbot_dane import certstore, challenge, config, state, zone
from certbot_dane import deploy as rollout_module
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import DaneError
from certbot_dane.records import Record

logger = logging.getLogger(__name__)

STATE_FILE = "manual-challenges.json"


def _load(path: Path) -> tuple[list[Record], list[Record]]:
    """The TXT records the auth hook added (and not yet removed), and those not yet waited for."""
    data = state.read_json(path, default={}) or {}
    return [Record(**r) for r in data.get("added", [])], [Record(**r) for r in data.get("pending", [])]


def _save(path: Path, added: list[Record], pending: list[Record]) -> None:
    state.write_json(path, {
        "added": [vars(r) for r in added],
        "pending": [vars(r) for r in pending],
    })


def _challenge_record(env: Mapping[str, str]) -> Record:
    domain, validation = env.get("CERTBOT_DOMAIN"), env.get("CERTBOT_VALIDATION")
    if not domain or not validation:
        raise DaneError("CERTBOT_DOMAIN and CERTBOT_VALIDATION are not set: run this as certbot's "
                        "--manual-auth-hook/--manual-cleanup-hook with --preferred-challenges dns")
    return challenge.validation_record("_acme-challenge." + domain.removeprefix("*."), validation)


def auth(env: Mapping[str, str]) -> None:
    """Publish this challenge's TXT record; on the last challenge of the run, wait for all of them."""
    settings = config.load(env.get(config.ENV_VAR) or None)
    client = DnsClient(settings.dns)
    record = _challenge_record(env)
    path = settings.state_dir / STATE_FILE
    with state.locked(settings.state_dir):
        added, pending = _load(path)
        zone.apply(client, add=[record])
        _save(path, added + [record], pending + [record])
    if env.get("CERTBOT_REMAINING_CHALLENGES", "0") != "0":
        return
    domains = {"_acme-challenge." + d.removeprefix("*.").lower().rstrip(".") + "."
               for d in env.get("CERTBOT_ALL_DOMAINS", "").split(",") if d}
    mine = [r for r in pending + [record] if r.name in domains or r == record]
    challenge.wait(client, mine)
    with state.locked(settings.state_dir):
        added, pending = _load(path)
        _save(path, added, [r for r in pending if r not in mine])


def cleanup(env: Mapping[str, str]) -> None:
    """Remove the TXT record the auth hook added for this challenge, and nothing else."""
    settings = config.load(env.get(config.ENV_VAR) or None)
    record = _challenge_record(env)
    path = settings.state_dir / STATE_FILE
    with state.locked(settings.state_dir):
        added, pending = _load(path)
        if record not in added:
            logger.info("%s was not added by the auth hook; left alone", record)
            return
        zone.apply(DnsClient(settings.dns), remove=[record])
        _save(path, [r for r in added if r != record], [r for r in pending if r != record])


def certbot_dry_run(pid: int | None = None) -> bool:
    """Whether an ancestor process is `certbot ... --dry-run` (certbot tells hooks no other way)."""
    pid = os.getppid() if pid is None else pid
    while pid > 1:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        if b"--dry-run" in cmdline and any(b"certbot" in arg for arg in cmdline[:2]):
            return True
        pid = int(stat.rpartition(")")[2].split()[1])
    return False


def deploy(env: Mapping[str, str]) -> None:
    """--deploy-hook: stage the renewed certificate of $RENEWED_LINEAGE and pre-publish its records."""
    live = env.get("RENEWED_LINEAGE")
    if not live:
        raise DaneError("RENEWED_LINEAGE is not set: run this as certbot's --deploy-hook")
    settings = config.load(env.get(config.ENV_VAR) or None)
    name = Path(live).name
    if name not in settings.lineages:
        logger.info("lineage %s is not configured in %s; skipped", name, settings.path)
        return
    if certbot_dry_run():
        logger.info("certbot --dry-run: nothing staged or published for %s", name)
        return
    certs = certstore.read_dir(Path(live))
    if certs is None:
        raise DaneError(f"{live}/cert.pem does not exist: RENEWED_LINEAGE must name certbot's live/<lineage> directory")
    rollout = rollout_module.Rollout.from_config(settings)
    with state.locked(settings.state_dir):
        rollout_module.stage(rollout, settings.lineages[name], certs)


_ACTIONS = {"auth": auth, "cleanup": cleanup, "deploy": deploy}


def run(action: str) -> int:
    """Run one hook (auth, cleanup, deploy) with the environment certbot gives it; the exit status."""
    logging.basicConfig(level=logging.INFO, format="certbot-dane: %(message)s", stream=sys.stderr)
    if action not in _ACTIONS:
        print(f"usage: python -m certbot_dane.hooks {{{','.join(_ACTIONS)}}}", file=sys.stderr)
        return 2
    try:
        _ACTIONS[action](os.environ)
    except DaneError as err:
        print(f"certbot-dane {action} hook: error: {err}", file=sys.stderr)
        return 1
    return 0


def auth_main() -> int:
    """Body of hooks/certbot-dane-auth."""
    return run("auth")


def cleanup_main() -> int:
    """Body of hooks/certbot-dane-cleanup."""
    return run("cleanup")


def deploy_main() -> int:
    """Body of hooks/certbot-dane-deploy."""
    return run("deploy")


if __name__ == "__main__":
    sys.exit(run(sys.argv[1] if len(sys.argv) > 1 else ""))
