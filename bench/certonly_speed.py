"""Time whole `certbot certonly` runs on the sandbox: `-a dane` versus certbot-dns-rfc2136, interleaved.

Run from the repository root: `.venv/bin/python bench/certonly_speed.py [--rounds N] [--skip-default]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sandbox.servers import Sandbox  # noqa: E402

DANE_TARGET = 1.25
"""`dane` may take at most this many times the zero-wait floor (median against median)."""

DEFAULT_TARGET = 10.0
"""certbot-dns-rfc2136 at its default must take at least this many times as long as `dane`."""

DEFAULT_ROUNDS = 5
SLOW_ROUNDS = 3
"""Rounds (spread evenly over all rounds) that also run the 60 s default variant."""

RUN_TIMEOUT = 300.0
"""Seconds one certbot process may take before the benchmark gives up."""

ZONE = "example.org"


@dataclass(frozen=True)
class Variant:
    """One way of answering DNS-01: a short key, a table label and the certbot arguments."""

    key: str
    label: str
    args: Callable[[Path, Path], list[str]]
    """Certbot arguments given (dane TOML config, rfc2136 INI credentials)."""


VARIANTS = (
    Variant("dane", "dane", lambda toml, _ini: ["-a", "dane", "--dane-config", str(toml)]),
    Variant(
        "floor",
        "rfc2136, propagation 0 (floor)",
        lambda _toml, ini: ["-a", "dns-rfc2136", "--dns-rfc2136-credentials", str(ini),
                            "--dns-rfc2136-propagation-seconds", "0"],
    ),
    Variant(
        "default",
        "rfc2136, default (60 s)",
        lambda _toml, ini: ["-a", "dns-rfc2136", "--dns-rfc2136-credentials", str(ini)],
    ),
)
BY_KEY = {variant.key: variant for variant in VARIANTS}


@dataclass(frozen=True)
class Run:
    """One timed certbot process."""

    round: int
    variant: str
    domain: str
    seconds: float


@dataclass(frozen=True)
class Summary:
    """The figures of one variant over all its runs."""

    variant: str
    label: str
    runs: int
    median: float
    min: float
    max: float


def spread(count: int, rounds: int) -> set[int]:
    """`count` round indices out of range(rounds), spread evenly and always including the first."""
    count = max(0, min(count, rounds))
    if count == 0:
        return set()
    if count == 1:
        return {0}
    return {round(i * (rounds - 1) / (count - 1)) for i in range(count)}


def schedule(rounds: int, slow_rounds: set[int], keys: Sequence[str]) -> list[list[str]]:
    """Per round, the variant keys in run order: the list rotated by one each round, slow ones filtered."""
    plan = []
    for index in range(rounds):
        shift = index % len(keys)
        order = [*keys[shift:], *keys[:shift]]
        plan.append([key for key in order if key != "default" or index in slow_rounds])
    return plan


def write_credentials(sandbox: Sandbox, path: Path) -> Path:
    """certbot-dns-rfc2136's INI credentials for the sandbox primary, mode 0600 from the start."""
    text = (
        f"dns_rfc2136_server = 127.0.0.1\n"
        f"dns_rfc2136_port = {sandbox.port}\n"
        f"dns_rfc2136_name = {sandbox.key.name}\n"
        f"dns_rfc2136_secret = {sandbox.key.secret}\n"
        f"dns_rfc2136_algorithm = HMAC-SHA256\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def run_certonly(sandbox: Sandbox, args: list[str], domain: str) -> float:
    """Run one whole `certbot certonly` process; return its wall time, or exit(1) if it failed."""
    command = sandbox.certbot_command("certonly", *args, "-d", domain)
    env = sandbox.certbot_env()
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-30:])
        print(f"certbot certonly {' '.join(args)} -d {domain} failed (exit {done.returncode}) "
              f"after {seconds:.2f} s:\n{tail}", file=sys.stderr)
        sys.exit(1)
    return seconds


def summarise(runs: Sequence[Run], keys: Sequence[str]) -> list[Summary]:
    """Median, min and max seconds per variant, in the order of `keys`."""
    out = []
    for key in keys:
        times = [run.seconds for run in runs if run.variant == key]
        if times:
            out.append(Summary(key, BY_KEY[key].label, len(times), statistics.median(times), min(times), max(times)))
    return out


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "python": platform.python_version(),
        "certbot": metadata.version("certbot"),
        "certbot-dns-rfc2136": metadata.version("certbot-dns-rfc2136"),
        "platform": platform.platform(),
        "loadavg_at_end": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def report(summaries: Sequence[Summary], rounds: int, host: dict[str, str]) -> dict[str, object]:
    """Print the table, the ratios and the verdicts; return them for --json."""
    by_key = {s.variant: s for s in summaries}
    print()
    print(f"{'variant':<32} {'runs':>4} {'median':>8} {'min':>8} {'max':>8}")
    for s in summaries:
        print(f"{s.label:<32} {s.runs:>4} {s.median:>8.2f} {s.min:>8.2f} {s.max:>8.2f}")
    print()
    dane, floor, default = by_key["dane"], by_key["floor"], by_key.get("default")
    dane_ratio = dane.median / floor.median
    dane_met = dane_ratio <= DANE_TARGET
    print(f"dane / floor    = {dane_ratio:.2f}x  (target <= {DANE_TARGET:g}x): {'MET' if dane_met else 'NOT MET'}")
    default_ratio: float | None = None
    default_met: bool | None = None
    if default is None:
        print("default / dane  = n/a (default variant skipped)")
    else:
        default_ratio = default.median / dane.median
        default_met = default_ratio >= DEFAULT_TARGET
        print(f"default / dane  = {default_ratio:.1f}x  (target >= {DEFAULT_TARGET:g}x): "
              f"{'MET' if default_met else 'NOT MET'}")
    print()
    print(f"machine: nproc={host['nproc']}, python {host['python']}, certbot {host['certbot']}, "
          f"certbot-dns-rfc2136 {host['certbot-dns-rfc2136']}, load average at end {host['loadavg_at_end']}")
    print(f"note: wall times in seconds of whole `certbot certonly` processes (one domain each) on a shared "
          f"{host['nproc']}-core machine; medians over the runs shown ({rounds} rounds, interleaved, "
          "after one untimed warm-up per fast variant).")
    return {
        "dane_over_floor": dane_ratio,
        "dane_target": DANE_TARGET,
        "dane_target_met": dane_met,
        "default_over_dane": default_ratio,
        "default_target": DEFAULT_TARGET,
        "default_target_met": default_met,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the interleaved rounds on one sandbox, print and optionally save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"rounds of dane and the zero-wait floor (default {DEFAULT_ROUNDS})")
    parser.add_argument("--default-rounds", type=int, default=SLOW_ROUNDS,
                        help=f"how many of those rounds also run the 60 s default variant (default {SLOW_ROUNDS})")
    parser.add_argument("--skip-default", action="store_true", help="omit certbot-dns-rfc2136 at its default")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE")
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="keep the sandbox (certbot logs included) in DIR instead of a temporary directory")
    options = parser.parse_args(argv)
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")

    slow = set() if options.skip_default else spread(options.default_rounds, options.rounds)
    keys = [v.key for v in VARIANTS if v.key != "default" or slow]
    plan = schedule(options.rounds, slow, keys)

    with tempfile.TemporaryDirectory(prefix="certbot-dane-bench-") as scratch:
        base = options.workdir.resolve() if options.workdir else Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        with Sandbox(base / "sandbox") as box:
            toml = box.write_config(base / "dane.toml")
            ini = write_credentials(box, base / "rfc2136.ini")
            for key in ("dane", "floor"):  # registers the account and warms caches; not timed
                seconds = run_certonly(box, BY_KEY[key].args(toml, ini), f"warmup-{key}.{ZONE}")
                print(f"warm-up    {key:<8} {seconds:6.2f} s (untimed)", flush=True)
            runs: list[Run] = []
            for index, order in enumerate(plan):
                for key in order:
                    domain = f"b{index + 1}-{key}.{ZONE}"
                    seconds = run_certonly(box, BY_KEY[key].args(toml, ini), domain)
                    runs.append(Run(index + 1, key, domain, seconds))
                    print(f"round {index + 1}/{options.rounds}  {key:<8} {seconds:6.2f} s  {domain}", flush=True)

    host = machine()
    summaries = summarise(runs, keys)
    verdict = report(summaries, options.rounds, host)
    if options.json:
        figures = {
            "machine": host,
            "rounds": options.rounds,
            "summaries": [asdict(s) for s in summaries],
            "runs": [asdict(r) for r in runs],
            **verdict,
        }
        options.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
