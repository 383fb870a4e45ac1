"""Entry points for certbot's hooks: --manual-auth-hook, --manual-cleanup-hook and --deploy-hook."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from certbot_dane import certstore, challenge, config, state, zone
from certbot_dane import deploy as rollout_module
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import DaneError, UpdateRejected, ZoneNotFound
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


def _with(records: list[Record], record: Record) -> list[Record]:
    return records if record in records else records + [record]


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
    with state.locked(settings.state_dir, group=settings.monitor_group):
        added, pending = _load(path)
        # written down before the UPDATE: if it fails after the primary applied it (answer lost,
        # not confirmed) or this process dies, the cleanup hook still removes the record
        _save(path, _with(added, record), pending)
        try:
            zone.apply(client, add=[record])
        except (UpdateRejected, ZoneNotFound):  # one record, one message: the primary changed nothing
            _save(path, added, pending)
            raise
        pending = _with(pending, record)
        _save(path, _with(added, record), pending)
    if env.get("CERTBOT_REMAINING_CHALLENGES", "0") != "0":
        return
    domains = {"_acme-challenge." + d.removeprefix("*.").lower().rstrip(".") + "."
               for d in env.get("CERTBOT_ALL_DOMAINS", "").split(",") if d}
    mine = [r for r in pending if r.name in domains or r == record]
    challenge.wait(client, mine)
    with state.locked(settings.state_dir, group=settings.monitor_group):
        added, pending = _load(path)
        _save(path, added, [r for r in pending if r not in mine])


def cleanup(env: Mapping[str, str]) -> None:
    """Remove the TXT record the auth hook added for this challenge, and nothing else."""
    settings = config.load(env.get(config.ENV_VAR) or None)
    record = _challenge_record(env)
    path = settings.state_dir / STATE_FILE
    with state.locked(settings.state_dir, group=settings.monitor_group):
        added, pending = _load(path)
        if record not in added:
            logger.info("%s was not added by the auth hook; left alone", record)
            return
        zone.apply(DnsClient(settings.dns), remove=[record])
        _save(path, [r for r in added if r != record], [r for r in pending if r != record])


#: certbot's sub-commands (certbot/_internal/cli/helpful.py); the first of them on its command line is the verb.
CERTBOT_VERBS = frozenset({"auth", "certonly", "run", "install", "plugins", "register", "update_account",
                           "show_account", "unregister", "renew", "revoke", "rollback", "everything",
                           "certificates", "delete", "enhance", "reconfigure"})
_CERTBOT_PROGRAMS = frozenset({"certbot", "letsencrypt"})
_DRY_RUN = "--dry-run"
_SHORTEST_PREFIX = "--dr"  # argparse takes any unambiguous prefix; `--d` is ambiguous in certbot


def dry_run(args: Sequence[str]) -> str | None:
    """Why certbot's arguments (after the program name) make a dry run, or None when they do not.

    certbot exports nothing to a deploy hook that tells a dry run apart (only RENEWED_LINEAGE and
    RENEWED_DOMAINS), so its command line is read the way certbot's argparse reads it: `--dry-run`
    or any prefix of it down to `--dr`, with or without `=value`, and the `reconfigure` verb,
    which always renews as a dry run (and runs deploy hooks with --run-deploy-hooks).
    """
    verb = next((arg for arg in args if arg in CERTBOT_VERBS), None)  # as certbot's determine_verb
    if verb == "reconfigure":
        return "certbot reconfigure (a dry run)"
    for arg in args:
        option = arg.partition("=")[0]
        if len(option) >= len(_SHORTEST_PREFIX) and _DRY_RUN.startswith(option):
            return f"certbot {verb or 'run'} {arg} (a dry run)"
    return None


def certbot_args(cmdline: Sequence[str]) -> list[str] | None:
    """certbot's arguments if `cmdline` runs certbot (directly, through python, or `python -m certbot`)."""
    for index, arg in enumerate(cmdline[:4]):
        if Path(arg).name in _CERTBOT_PROGRAMS and (index == 0 or Path(cmdline[0]).name.startswith("python")):
            return list(cmdline[index + 1:])
    return None


def certbot_command_line(pid: int | None = None, proc: Path = Path("/proc")) -> list[str] | None:
    """The arguments of the nearest ancestor process that is certbot; None when none is.

    OSError when an ancestor's command line cannot be read before certbot is found (then nobody
    can tell whether this is a dry run).
    """
    pid = os.getppid() if pid is None else pid
    while pid > 0:
        cmdline = (proc / str(pid) / "cmdline").read_bytes().removesuffix(b"\0").split(b"\0")
        found = certbot_args([os.fsdecode(arg) for arg in cmdline])
        if found is not None:
            return found
        if pid == 1:  # certbot may be pid 1 itself (a container), so pid 1 is read too
            break
        stat = (proc / str(pid) / "stat").read_text()
        pid = int(stat.rpartition(")")[2].split()[1])
    return None


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
    try:
        args = certbot_command_line()
    except OSError as err:
        logger.warning("cannot read %s (%s) to tell a certbot dry run from a renewal: nothing staged or "
                       "published for %s; `certbot-dane deploy` (the timer) adopts a renewed certificate "
                       "from live/", err.filename, err.strerror, name)
        return
    why = dry_run(args) if args is not None else None
    if why is not None:
        logger.info("%s: nothing staged or published for %s", why, name)
        return
    certs = certstore.read_dir(Path(live))
    if certs is None:
        raise DaneError(f"{live}/cert.pem does not exist: RENEWED_LINEAGE must name certbot's live/<lineage> directory")
    rollout = rollout_module.Rollout.from_config(settings)
    with state.locked(settings.state_dir, group=settings.monitor_group):
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
