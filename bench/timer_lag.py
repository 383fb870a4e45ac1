"""Benchmark: lag from a certificate's safe moment to the end of the deploy, under the shipped timer schedule.

Reads systemd/certbot-dane.timer (OnCalendar= repeating within a minute, AccuracySec=, RandomizedDelaySec=),
draws many random safe moments and reports the median/p99/max of

    lag = (start of the first run at or after the safe moment) - (safe moment) + (one deploy run's duration)

Model of systemd (sd-event): a calendar elapse at t is armed with the window [t, t + AccuracySec]; systemd fires
at a point of that window fixed per boot (it aligns wake-ups to a boot-specific offset to coalesce them), so each
simulated safe moment gets its own boot offset, uniform in [0, AccuracySec]. RandomizedDelaySec adds a fresh
uniform delay to every elapse. Usage: python bench/timer_lag.py [--run-seconds 0.5] [--samples 200000]
"""

from __future__ import annotations

import argparse
import datetime
import random
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TIMER = Path(__file__).resolve().parent.parent / "systemd" / "certbot-dane.timer"
BOUND = 60.0
"""The issue's bound: a deploy no later than 60 s after its safe moment."""

_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0,
          "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hr": 3600.0,
          "hour": 3600.0, "hours": 3600.0}


@dataclass(frozen=True)
class Schedule:
    """When the timer elapses within each minute, and how late systemd may fire."""

    seconds: tuple[int, ...]  # seconds past every minute at which OnCalendar= elapses, sorted
    accuracy: float
    randomized_delay: float

    @property
    def longest_gap(self) -> float:
        ring = [*self.seconds, self.seconds[0] + 60]
        return float(max(b - a for a, b in zip(ring, ring[1:], strict=False)))


def timespan(text: str) -> float:
    """Seconds in a systemd time span: '1s', '500ms', '1min 30s', '0' (bare numbers are seconds)."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip().lower()):
        if unit not in _UNITS and unit:
            raise ValueError(f"unknown time unit in {text!r}")
        total += float(number) * _UNITS.get(unit, 1.0)
    return total


def second_spec(expression: str) -> set[int]:
    """Seconds of every minute at which an OnCalendar= expression elapses: minutely, [*-*-* ]*:*:SPEC."""
    text = expression.strip()
    if text == "minutely":
        return {0}
    text = text.removeprefix("*-*-* ")
    hour, minute, spec = text.split(":") if text.count(":") == 2 else ("", "", "")
    if (hour, minute) != ("*", "*"):
        raise ValueError(f"OnCalendar={expression}: this bench only models schedules that repeat every minute")
    found: set[int] = set()
    for item in spec.split(","):
        start, _, step = item.partition("/")
        first, _, last = start.partition("..")
        low, high = int(first), int(last or (59 if step else first))
        found.update(range(low, high + 1, int(step or 1)))
    if not found or max(found) > 59:
        raise ValueError(f"OnCalendar={expression}: bad seconds {spec!r}")
    return found


def read_schedule(path: Path) -> Schedule:
    """The Schedule of a .timer file (several OnCalendar= lines elapse at the union of their times)."""
    values: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        key, sep, value = raw.strip().partition("=")
        if sep and not raw.lstrip().startswith(("#", ";")):
            values.setdefault(key.strip(), []).append(value.strip())
    seconds: set[int] = set()
    for expression in values.get("OnCalendar", []):
        seconds |= second_spec(expression)
    if not seconds:
        raise ValueError(f"{path}: no OnCalendar=")
    accuracy = timespan(values.get("AccuracySec", ["1min"])[-1])  # systemd's default accuracy is 1 min
    return Schedule(tuple(sorted(seconds)), accuracy, timespan(values.get("RandomizedDelaySec", ["0"])[-1]))


def cross_check(path: Path, schedule: Schedule) -> str:
    """Compare our reading of OnCalendar= with `systemd-analyze calendar`, when it is installed."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return "not cross-checked (systemd-analyze missing)"
    expressions = [line.split("=", 1)[1].strip() for line in path.read_text().splitlines()
                   if line.strip().startswith("OnCalendar=")]
    seen: set[int] = set()
    for expression in expressions:
        done = subprocess.run([analyze, "calendar", "--base-time=2024-01-01 00:00:00 UTC", "--iterations=240",
                               expression], capture_output=True, text=True, env={"TZ": "UTC"}, check=True)
        for stamp in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", done.stdout):
            seen.add(datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").second)
    if seen != set(schedule.seconds):
        raise SystemExit(f"systemd-analyze elapses at seconds {sorted(seen)}, we read {list(schedule.seconds)}")
    return "cross-checked with systemd-analyze calendar"


def simulate(schedule: Schedule, run_seconds: float, samples: int, seed: int = 1) -> list[float]:
    """Lags (seconds) for `samples` random safe moments within an hour."""
    rng = random.Random(seed)
    period = 60.0
    lags = []
    for _ in range(samples):
        safe = rng.uniform(0, 3600)
        offset = rng.uniform(0, schedule.accuracy)  # this boot's point in the accuracy window
        minute = int(safe // period)
        start = None
        # the first firing at or after `safe` (an elapse just before `safe` may still fire after it)
        reach = schedule.accuracy + schedule.randomized_delay
        first_minute = int((safe - reach) // period) - 1
        for m in range(first_minute, minute + 2):
            for second in schedule.seconds:
                fire = m * period + second + offset + rng.uniform(0, schedule.randomized_delay)
                if fire >= safe and (start is None or fire < start):
                    start = fire
        assert start is not None
        lags.append(start - safe + run_seconds)
    return lags


def report(label: str, schedule: Schedule, run_seconds: float, samples: int) -> None:
    lags = simulate(schedule, run_seconds, samples)
    worst = schedule.longest_gap + schedule.accuracy + schedule.randomized_delay + run_seconds
    over = sum(lag > BOUND for lag in lags) / len(lags)
    print(f"{label}: elapses at :{',:'.join(f'{s:02d}' for s in schedule.seconds)} of every minute, "
          f"AccuracySec={schedule.accuracy:g}s, RandomizedDelaySec={schedule.randomized_delay:g}s, "
          f"run {run_seconds:g}s, {samples} safe moments")
    print(f"  lag median {statistics.median(lags):6.2f} s   p99 {statistics.quantiles(lags, n=100)[98]:6.2f} s   "
          f"max {max(lags):6.2f} s   bound {worst:6.2f} s   over {BOUND:g} s: {over:.2%}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--timer", type=Path, default=TIMER)
    parser.add_argument("--run-seconds", type=float, default=0.5, help="one deploy run's duration (default 0.5)")
    parser.add_argument("--samples", type=int, default=200_000)
    args = parser.parse_args(argv)
    schedule = read_schedule(args.timer)
    print(f"{args.timer.name}: {cross_check(args.timer, schedule)}")
    report("shipped", schedule, args.run_seconds, args.samples)
    report("for comparison, once a minute (OnCalendar=*:*:00)", Schedule((0,), schedule.accuracy, 0.0),
           args.run_seconds, args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
