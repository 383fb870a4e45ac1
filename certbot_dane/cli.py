"""The `certbot-dane` command: parse arguments, call one core function, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from certbot_dane import __version__, compat, config, hooks, state, timer
from certbot_dane import deploy as rollout
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import DaneError

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Safe DANE TLSA rollover for certbot certificates.

certbot issues and renews (`-a dane` answers DNS-01 through RFC 2136); on renewal the installer
(`-i dane`) or the deploy hook stages the new certificate and pre-publishes its TLSA records;
`certbot-dane deploy`, run by certbot-dane.timer, swaps it in once every authoritative server has
served the new records for two TTLs, reloads the services, and retires the old records.
Services must read their certificate from <deploy_dir>/<lineage>/, never from certbot's live/.
"""

EPILOG = """\
exit status: 0 success, 1 an error was reported (message on stderr), 2 bad usage;
`status` uses the Nagios plugin codes instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
configuration: TOML, see README.md; `certbot-dane check` validates it.
"""

WAKE_VAR = "CERTBOT_DANE_WAKE"

HOOK_TEMPLATE = """#!/bin/sh
# Installed by `certbot-dane install-hook`: stage renewed certificates for DANE rollover.
CERTBOT_DANE_CONFIG='{config}' exec '{python}' -m certbot_dane.hooks deploy
"""


def _check(args: argparse.Namespace) -> int:
    settings = config.load(args.config, need_key=not args.read_only)
    client = DnsClient(settings.dns)
    key = settings.dns.key
    if key is not None:
        print(f"{settings.path}: configuration is valid (TSIG key {key.name} {key.algorithm}, "
              f"primary {settings.dns.server})")
    else:
        print(f"{settings.path}: configuration is valid for read-only use (status, check --read-only; no TSIG key: "
              f"{settings.dns.unkeyed}; deploy, the hooks and the plugin need one), primary {settings.dns.server}")
    for lineage in settings.lineages.values():
        for name in lineage.tlsa:
            zone = client.find_zone(name)
            servers = ", ".join(map(str, client.servers(zone)))
            print(f"  {lineage.name}: {name} in zone {zone}, authoritative servers {servers}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    if args.lineage and args.lineage not in settings.lineages:
        raise DaneError(f"lineage {args.lineage!r} is not configured in {settings.path}")
    if args.wake == "systemd" and (args.lineage or args.dry_run):
        raise DaneError("--wake systemd schedules the next run from a run of every lineage: "
                        "not with --lineage or --dry-run")
    run = rollout.Rollout.from_config(settings, dry_run=args.dry_run)
    failures = rollout.deploy_all(run, [args.lineage] if args.lineage else None, force=args.force_before_gate,
                                  wake=None if args.lineage or args.dry_run else args.wake)
    for line in run.log:
        print(line)
    if run.wake is not None and not run.wake.steady:
        print(f"next run: {rollout.utc(run.wake.at)} ({run.wake.reason})")
    for name, error in failures.items():
        print(f"certbot-dane: error: {name}: {error}", file=sys.stderr)
    if run.wake_error is not None:
        print(f"certbot-dane: error: {run.wake_error}", file=sys.stderr)
    return 1 if failures or run.wake_error else 0


def _status(args: argparse.Namespace) -> int:
    from certbot_dane import status  # imported here: its DNSSEC code is not needed by other commands

    return status.main(args)


def _install_hook(args: argparse.Namespace) -> int:
    cfg = Path(args.config or config.default_path()).resolve()
    config.load(cfg)
    target = Path(args.hooks_dir) / "certbot-dane"
    text = HOOK_TEMPLATE.format(config=cfg, python=sys.executable)
    if args.print:
        print(text, end="")
        return 0
    state.atomic_write(target, text.encode(), mode=0o755)
    print(f"installed {target}: certbot runs it after every renewal")
    return 0


def _hook(args: argparse.Namespace) -> int:
    if args.config:
        os.environ[config.ENV_VAR] = args.config
    return hooks.run(args.command.removesuffix("-hook"))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with a sub-command per job."""
    parser = compat.ArgumentParser(prog="certbot-dane", description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"certbot-dane {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help=f"configuration file (default: ${config.ENV_VAR} or {config.DEFAULT_PATH})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every DNS step")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chk = sub.add_parser("check", help="validate the configuration and look up each TLSA name's zone and "
                                       "authoritative servers (changes nothing)")
    chk.add_argument("--read-only", action="store_true",
                     help="check what status needs, as the monitoring user: the TSIG key may be unreadable or "
                          "not configured")
    chk.set_defaults(func=_check)

    dep = sub.add_parser(
        "deploy", help="deploy staged certificates whose gate has opened, reload, retire old records (run by "
                       "certbot-dane.timer)",
        description="For each lineage: follow each TLSA name's CNAMEs to where its RRset lives; publish the "
                    "missing records of the deployed and staged certificates, each with an ownership claim (a TXT "
                    "record at <hash>._certbot-dane.<owner>); once every authoritative server serves them, wait "
                    "2 x TTL (or the lineage's min_wait, if longer), counted in time since boot; swap the staged "
                    "certificate in; reload; verify; retire the records certbot-dane published that nothing "
                    "deployed or staged needs, together with the last claim on them. A record another host still "
                    "claims, or that certbot-dane did not publish, is never removed. A second concurrent run is "
                    "refused (lock).")
    dep.add_argument("--lineage", metavar="NAME", help="only this lineage (certbot certificate name)")
    dep.add_argument("--dry-run", action="store_true",
                     help="print what would be published, swapped, reloaded and removed, and why not yet; "
                          "change nothing")
    dep.add_argument("--wake", choices=timer.MODES, default=os.environ.get(WAKE_VAR) or "none",
                     help="after the run, schedule the next one: 'systemd' arms a transient timer "
                          "(certbot-dane-wake.timer) for the next moment anything can change (a safe moment, a "
                          "retry, a lagging server's next poll); 'none' (cron, manual runs) only records it in "
                          f"<state_dir>/wake.json (default: ${WAKE_VAR} or none; certbot-dane.service sets systemd)")
    dep.add_argument("--force-before-gate", action="store_true",
                     help="EMERGENCY ONLY (a certificate about to expire): deploy before the TTL gate; "
                          "DANE-validating senders that cached the old records will defer mail")
    dep.set_defaults(func=_deploy)

    sta = sub.add_parser("status", help="per certificate: phase, deployed and staged certificate, the TLSA records "
                                        "every server serves, DNSSEC, findings, what the next deploy run would "
                                        "do; Nagios exit codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); changes "
                                        "nothing")
    sta.add_argument("--lineage", metavar="NAME", help="only this lineage")
    output = sta.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output (schema: docs/status-json.md)")
    output.add_argument("--prometheus", action="store_true",
                        help="Prometheus text exposition for node_exporter's textfile collector (docs/monitoring.md)")
    sta.set_defaults(func=_status)

    ins = sub.add_parser("install-hook", help="install certbot's deploy hook so renewals are staged")
    ins.add_argument("--hooks-dir", default="/etc/letsencrypt/renewal-hooks/deploy",
                     help="certbot's deploy hook directory (default: %(default)s)")
    ins.add_argument("--print", action="store_true", help="print the hook instead of installing it")
    ins.set_defaults(func=_install_hook)

    for action, env in (("auth", "CERTBOT_DOMAIN, CERTBOT_VALIDATION"),
                        ("cleanup", "CERTBOT_DOMAIN, CERTBOT_VALIDATION"),
                        ("deploy", "RENEWED_LINEAGE")):
        option = "--deploy-hook" if action == "deploy" else f"--manual-{action}-hook"
        sub.add_parser(f"{action}-hook", help=f"certbot {option} (reads {env})").set_defaults(func=_hook)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; exit 0 on success, 1 on a reported error, 2 on bad usage."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a reader that went away shows up here, not as a traceback at exit
    except BrokenPipeError:
        # `certbot-dane check | head -1`: stop quietly; output from now on goes nowhere, as
        # https://docs.python.org/3/library/signal.html#note-on-sigpipe recommends
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="certbot-dane: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except DaneError as err:
        print(f"certbot-dane: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
