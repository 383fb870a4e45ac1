"""Benchmark: wall time of one `certbot-dane deploy` run for 1 and for 200 lineages in one zone.

Against the local named (real UPDATEs, real queries, real files). Counts the UPDATE messages per
zone and direction in each run (must stay at one). Certificates are self-signed (sandbox.fleet)
so that the figures measure certbot-dane, not Pebble. Run: .venv/bin/python bench/deploy_speed.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certbot_dane.certstore import CertStore  # noqa: E402
from certbot_dane.config import load  # noqa: E402
from certbot_dane.deploy import Rollout, deploy_all  # noqa: E402
from certbot_dane.dnsclient import DnsClient  # noqa: E402
from certbot_dane.records import ZoneUpdate  # noqa: E402
from sandbox.fleet import write_fleet  # noqa: E402
from sandbox.servers import Sandbox  # noqa: E402

TTL = 1


class CountingClient(DnsClient):
    """The real client, counting UPDATE messages per (zone, direction)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.updates: Counter[tuple[str, str]] = Counter()

    def update(self, change: ZoneUpdate) -> None:
        self.updates.update([(change.zone, d) for d, recs in (("add", change.add), ("remove", change.remove)) if recs])
        super().update(change)


def timed_run(config_path: Path) -> tuple[float, Counter[tuple[str, str]]]:
    settings = load(config_path)
    client = CountingClient(settings.dns)
    rollout = Rollout(settings, client, CertStore(settings.state_dir, settings.deploy_dir))
    start = time.perf_counter()
    failures = deploy_all(rollout)
    elapsed = time.perf_counter() - start
    if failures:
        sys.exit(f"deploy failed: {failures}")
    return elapsed, client.updates


def bench(box: Sandbox, base: Path, count: int, rounds: int) -> dict[str, object]:
    hosts = [f"h{count}-{i}.example.org" for i in range(count)]
    le = base / f"le{count}"
    write_fleet(le, hosts, age=datetime.timedelta(hours=rounds + 2))
    config = box.write_config(base / f"fleet{count}.toml", state_dir=base / f"state{count}",
                              deploy_dir=base / f"live{count}", letsencrypt_dir=le,
                              lineages={h: [f"_25._tcp.{h}"] for h in hosts}, lineage_extra=f"tlsa_ttl = {TTL}")
    timed_run(config)  # bootstrap: deploy all at once
    stage_times, deploy_times, steady_times, updates = [], [], [], []
    for r in range(rounds):
        write_fleet(le, hosts, age=datetime.timedelta(hours=rounds + 1 - r))  # certbot renewed them all
        elapsed, counted = timed_run(config)
        stage_times.append(elapsed)
        updates.append(dict(counted))
        while True:  # until every lineage's gate clock runs (the primary signs within milliseconds)
            states = [json.loads((base / f"state{count}" / "lineages" / f"{h}.json").read_text()) for h in hosts]
            if all(s["staged"] and s["staged"]["served_at"] for s in states):
                break
            timed_run(config)
        time.sleep(max(0.0, max(s["staged"]["served_at"] for s in states) + 2 * TTL + 0.05 - time.time()))
        elapsed, counted = timed_run(config)
        deploy_times.append(elapsed)
        updates.append(dict(counted))
        steady_times.append(timed_run(config)[0])
    return {"lineages": count, "stage_and_publish_s": stage_times, "deploy_and_retire_s": deploy_times,
            "steady_s": steady_times, "updates_per_run": updates}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 200])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Sandbox(Path(tmp) / "sandbox", pebble=False) as box:
        results = [bench(box, Path(tmp), n, args.rounds) for n in args.sizes]
    print(f"machine: nproc={os.cpu_count()}, python {sys.version.split()[0]}; wall times in seconds, "
          f"median of {args.rounds} rounds (min-max); local named, 1 TLSA name per lineage")
    header = ("lineages", "stage+publish", "deploy+retire", "steady (no-op)")
    print(f"{header[0]:>8}  {header[1]:>22}  {header[2]:>22}  {header[3]:>22}  max UPDATEs/zone/dir")
    for r in results:
        cells = []
        for key in ("stage_and_publish_s", "deploy_and_retire_s", "steady_s"):
            values = r[key]
            assert isinstance(values, list)
            cells.append(f"{statistics.median(values):6.3f} ({min(values):.3f}-{max(values):.3f})")
        most = max((n for run in r["updates_per_run"] for n in run.values()), default=0)  # type: ignore[attr-defined]
        print(f"{r['lineages']:>8}  {cells[0]:>22}  {cells[1]:>22}  {cells[2]:>22}  {most}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
