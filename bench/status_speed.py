"""Benchmark: `certbot-dane status` for 250 lineages x 4 TLSA names on 2 authoritative servers.

Against the local named: a signed primary on 127.0.0.1 and a secondary on 127.0.0.2 (transferred
after loading). Times the same gather + assess (`status.report`) with concurrent queries and with one
query at a time (`workers=1`: the very same queries, in a plain loop), medians over rounds run
alternately, and prints the ratio, the peak Python heap of a concurrent run (tracemalloc), and the
wall time and peak RSS of the whole `certbot-dane status --json` process.

Two networks: `loopback` (named answers in microseconds, so the run is bound by Python's CPU time
to build and parse messages and check signatures), and `+10 ms` where each server sits behind a
TCP relay (a separate process) that holds every query 10 ms before passing it on, about what a
TCP handshake plus one exchange with a server 5 ms away costs. That is where concurrency pays.

The fleet is written directly, which is fine for a benchmark: self-signed certificates swapped into
the deploy directory with CertStore.swap, state files with state.save_lineage naming them deployed
and their records published, and the 1,000 TLSA records loaded with 4 TSIG-signed UPDATEs of 250
records through DnsClient. Run: .venv/bin/python bench/status_speed.py [--rounds 5] [--delay-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certbot_dane import assessment, certificate, certstore, state, status, statusformat  # noqa: E402
from certbot_dane.config import load  # noqa: E402
from certbot_dane.dnsclient import DnsClient  # noqa: E402
from certbot_dane.records import Record, ZoneUpdate  # noqa: E402
from certbot_dane.rollover import LineageState, Published, Version  # noqa: E402
from sandbox.fleet import write_certificate  # noqa: E402
from sandbox.servers import Sandbox, free_port  # noqa: E402

LINEAGES = 250
PORTS = (25, 465, 587)  # plus _993._tcp.imapN: 4 names per lineage
TTL = 300
BATCH = 250  # records per UPDATE


def tlsa_names(i: int) -> list[str]:
    return [f"_{port}._tcp.mx{i}.example.org" for port in PORTS] + [f"_993._tcp.imap{i}.example.org"]


def build_fleet(box: Sandbox, base: Path) -> Path:
    """Certificates, state files, config, and every TLSA record on both servers; returns the config path."""
    hosts = [f"b{i}.example.org" for i in range(LINEAGES)]
    config = box.write_config(base / "status.toml", state_dir=base / "state", deploy_dir=base / "live",
                              nameservers=box.nameservers, lineages={h: tlsa_names(i) for i, h in enumerate(hosts)},
                              lineage_extra=f"tlsa_ttl = {TTL}")
    settings = load(config)
    store = certstore.CertStore(settings.state_dir, settings.deploy_dir)
    now = time.time()
    records: list[Record] = []
    for host in hosts:
        lineage = settings.lineages[host]
        write_certificate(base / "certs" / host, host)
        certs = certstore.read_dir(base / "certs" / host)
        assert certs is not None
        store.swap(host, certs, None)
        values = tuple(r.to_text() for r in certificate.tlsa_records(certs, lineage.params))
        published = tuple(Published(n, v, now) for n in lineage.tlsa for v in values)
        state.save_lineage(settings.state_dir, LineageState(host, Version(certificate.fingerprint(certs.cert), values),
                                                            published=published))
        records += [Record(p.name, "TLSA", p.value, TTL) for p in published]
    client = DnsClient(settings.dns)
    for start in range(0, len(records), BATCH):
        batch = records[start:start + BATCH]
        client.update(ZoneUpdate("example.org.", add=tuple(batch)))
        # One UPDATE at a time: sent back to back, BIND 9.18's inline signing left the last one out
        # of the signed zone ("receive_secure_serial: unchanged") until the next change.
        box.primary.wait_for(batch[-1].name, "TLSA", lambda v: bool(v), timeout=60)
    assert box.secondary is not None
    box.secondary.retransfer("example.org", timeout=60)
    return config


# -- a relay that adds latency -----------------------------------------------------------
def _relay(listen: tuple[str, int], upstream: tuple[str, int], delay: float, ready: object) -> None:
    """Serve DNS over TCP on `listen`, passing each message to `upstream` after `delay` seconds."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(2)
                body = await reader.readexactly(int.from_bytes(head, "big"))
                await asyncio.sleep(delay)
                up_reader, up_writer = await asyncio.open_connection(*upstream)
                up_writer.write(head + body)
                answer_head = await up_reader.readexactly(2)
                answer = await up_reader.readexactly(int.from_bytes(answer_head, "big"))
                up_writer.close()
                writer.write(answer_head + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, *listen, backlog=1024)
        ready.set()  # type: ignore[attr-defined]
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def relayed_config(box: Sandbox, config: Path, delay: float) -> tuple[Path, list[multiprocessing.Process]]:
    """A copy of `config` whose primary and nameservers are relays adding `delay` to every query."""
    port = free_port(["127.0.0.1", "127.0.0.2"], udp=False)
    processes = []
    for server in box.servers:
        ready = multiprocessing.Event()
        process = multiprocessing.Process(target=_relay, daemon=True,
                                          args=((server.address, port), (server.address, server.port), delay, ready))
        process.start()
        ready.wait(10)
        processes.append(process)
    text = config.read_text().replace(f"port = {box.port}\n", f"port = {port}\n")
    for address in ("127.0.0.1", "127.0.0.2"):
        text = text.replace(f'"{address}:{box.port}"', f'"{address}:{port}"')
    slow = config.with_name("relayed.toml")
    slow.write_text(text)
    slow.chmod(0o600)
    return slow, processes


# -- measuring ---------------------------------------------------------------------------
def timed(config: Path, workers: int) -> tuple[float, assessment.Report]:
    settings = load(config)
    lineages = status.select(settings, None)
    start = time.perf_counter()
    report = status.report(settings, lineages, workers=workers)
    return time.perf_counter() - start, report


def compare(label: str, config: Path, rounds: int) -> dict[str, list[float]]:
    """Concurrent and sequential runs, alternating which goes first."""
    _, report = timed(config, status.WORKERS)  # warm-up, and a check that the fleet is what we think
    answers = sum(len(n.servers) for lr in report.lineages for n in lr.names)
    if report.status != assessment.Severity.OK or answers != 2 * LINEAGES * len(tlsa_names(0)):
        sys.exit(f"{label}: unexpected report ({answers} answers): {statusformat.summary(report)}")
    runs: dict[str, list[float]] = {"concurrent": [], "sequential": []}
    for r in range(rounds):
        for mode in (["concurrent", "sequential"] if r % 2 == 0 else ["sequential", "concurrent"]):
            elapsed, _ = timed(config, status.WORKERS if mode == "concurrent" else 1)
            runs[mode].append(elapsed)
            print(f"{label:<9} round {r + 1}/{rounds}  {mode:<10}  {elapsed:6.2f} s", flush=True)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="latency the relays add to each query")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="status-bench-") as tmp, \
            Sandbox(Path(tmp) / "box", secondary=True, pebble=False) as box:
        started = time.perf_counter()
        config = build_fleet(box, Path(tmp))
        print(f"fleet: {LINEAGES} lineages x {len(tlsa_names(0))} TLSA names = {LINEAGES * len(tlsa_names(0))} "
              f"names on 2 servers ({', '.join(box.nameservers)}), built in {time.perf_counter() - started:.1f} s; "
              f"{status.WORKERS} workers")
        results["loopback"] = compare("loopback", config, args.rounds)
        tracemalloc.start()
        timed(config, status.WORKERS)
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        cli = [str(Path(sys.executable).parent / "certbot-dane"), "-c", str(config), "status", "--json"]
        process_times = []
        for _ in range(3):
            start = time.perf_counter()
            done = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
            process_times.append(time.perf_counter() - start)
            if done.returncode != 0:
                sys.exit(f"certbot-dane status exited {done.returncode}: {done.stderr}")
        rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        slow, relays = relayed_config(box, config, args.delay_ms / 1000)
        try:
            results[f"+{args.delay_ms:g} ms"] = compare(f"+{args.delay_ms:g} ms", slow, max(1, args.rounds // 2))
        finally:
            for relay in relays:
                relay.terminate()
                relay.join()

    print()
    print(f"{'network':<10}{'mode':<28}{'runs':>5}{'median':>9}{'min':>8}{'max':>8}")
    for network, runs in results.items():
        for mode, values in runs.items():
            name = f"concurrent ({status.WORKERS} workers)" if mode == "concurrent" else "sequential (1 at a time)"
            print(f"{network:<10}{name:<28}{len(values):>5}{statistics.median(values):>9.2f}"
                  f"{min(values):>8.2f}{max(values):>8.2f}")
    print(f"{'loopback':<10}{'whole CLI process (--json)':<28}{len(process_times):>5}"
          f"{statistics.median(process_times):>9.2f}{min(process_times):>8.2f}{max(process_times):>8.2f}")
    print()
    for network, runs in results.items():
        ratio = statistics.median(runs["sequential"]) / statistics.median(runs["concurrent"])
        print(f"{network:<10} sequential / concurrent = {ratio:.2f}x")
    print(f"peak Python heap of one concurrent run (tracemalloc): {heap_peak / 2**20:.1f} MiB")
    print(f"peak RSS of the `certbot-dane status --json` process: {rss_kib / 1024:.1f} MiB")
    print(f"machine: nproc={os.cpu_count()}, load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
