"""The `certbot-dane` command: parse arguments, call one core function, map errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from certbot_dane import __version__, compat, config, hooks, reports, state, timer, tlsrptformat, tlsrptsummary
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

EX_TEMPFAIL = 75
"""sysexits.h: what `reports import -` exits with when it could not store the message, so that the MTA
delivering it through a pipe keeps it queued and tries again (Postfix, Exim, procmail, Sieve's pipe)."""

REPORTS_DESCRIPTION = """\
Read back the SMTP TLS reports (TLSRPT, RFC 8460) senders mail to the address in your
domain's _smtp._tls record: how many sessions to each MX host succeeded and failed, why, and which
sending organisations said so, with every DANE failure lined up with the rollover that was in
progress at that time (certbot-dane's own history of stage, deploy and retire moments).

  certbot-dane reports import ~/Maildir/.tlsrpt/ report.json.gz ...   # Maildir, mbox, messages, files
  certbot-dane reports --since 30d --domain example.org [--json]

`status` warns about DANE failures reported at a managed MX host (CRITICAL during a rollover).
"""

REPORTS_IMPORT_DESCRIPTION = """\
Store the reports found in each PATH (a Maildir folder, an mbox file, a message file, a directory of
them, .json or .json.gz report files; '-' reads one message or report on standard input, as an MTA
pipe delivers it) in <state_dir>/tlsrpt.sqlite3 ([reports] database). Reports already stored
(same organisation and report-id) are left as they are; a malformed, truncated or oversized report
(over [reports] max_size) is skipped with one line on stderr naming where it was and why; reports
whose period ended before [reports] retention_days are deleted. Nothing is moved or deleted in the
mail folders. Exit 0 when the import ran (skips included), 1 on an error; with '-', 75 (EX_TEMPFAIL)
on any error, so the MTA keeps the message and delivers it again later.
"""

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


def _reports(args: argparse.Namespace) -> int:
    if args.reports_command != "import":
        settings = config.load(args.config, need_key=False)
        summary = reports.summary(settings, args.since, time.time(), args.domain)
        print(json.dumps(tlsrptformat.to_json(summary), indent=2) if args.json else tlsrptformat.to_text(summary))
        return 0
    piped = "-" in args.paths
    try:
        settings = config.load(args.config, need_key=False)
        done = reports.import_reports(settings, args.paths, time.time(), sys.stdin.buffer if piped else None)
    except DaneError as err:
        if not piped:
            raise
        print(f"certbot-dane: error: {err} (the MTA keeps the message and tries again)", file=sys.stderr)
        return EX_TEMPFAIL
    for line in done.skipped:
        print(f"certbot-dane: {line}", file=sys.stderr)
    print(done.line())
    return 0


def _since(text: str) -> float:
    try:
        return tlsrptsummary.parse_since(text, time.time())
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_reports(sub: argparse._SubParsersAction[compat.ArgumentParser]) -> None:
    rep = sub.add_parser("reports", help="TLSRPT reports senders mailed you: sessions and failures per MX host, "
                                         "DANE failures lined up with rollovers; `reports import PATH...` stores them",
                         description=REPORTS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                         usage="certbot-dane reports [-h] [--domain DOMAIN] [--since WHEN] [--json]\n"
                               "       certbot-dane reports import [-h] PATH [PATH ...]")
    rep.add_argument("--domain", metavar="DOMAIN", help="only policies of this domain and the names below it")
    rep.add_argument("--since", metavar="WHEN", type=_since, default="30d",
                     help="reports whose period ends after WHEN: a duration back from now (30d, 12h, 2w) or a UTC "
                          "date (2026-11-01) (default: 30d)")
    rep.add_argument("--json", action="store_true", help="machine-readable output (schema_version 1, README)")
    rep.set_defaults(func=_reports, reports_command=None)
    rsub = rep.add_subparsers(dest="reports_command", metavar="import")
    imp = rsub.add_parser("import", help="store the reports found in Maildir/mbox folders, messages or files",
                          description=REPORTS_IMPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("paths", nargs="+", metavar="PATH", help="a Maildir, mbox, message, .json or .json.gz file, a "
                                                               "directory of them, or '-' for standard input")
    imp.set_defaults(func=_reports)


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
                                        "nothing",
                         description="Is DANE safe right now? Asks every authoritative server for each TLSA "
                                     "name (and validates its DNSSEC), a validating resolver for what senders get "
                                     "after caches ([status] resolver: \"system\", ADDRESS[:PORT] or \"none\"), "
                                     "and, for each endpoint in a lineage's verify list, every A/AAAA address of "
                                     "its host in a TLS handshake matched against the published records. Needs no "
                                     "TSIG key; a monitoring user reads the state through monitor_group. Exit "
                                     "codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
    sta.add_argument("--lineage", metavar="NAME", help="only this lineage")
    output = sta.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output (schema: docs/status-json.md)")
    output.add_argument("--prometheus", action="store_true",
                        help="Prometheus text exposition for node_exporter's textfile collector (docs/monitoring.md)")
    sta.set_defaults(func=_status)

    _add_reports(sub)

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
