"""Benchmark: the 30 s timer (old design) against the wake-up (new design), as whole processes, in one run.

1. Idle CPU a day, for 1, 10 and 200 lineages (nothing staged, nothing to retire): the CPU time (user + system,
   getrusage of the children) of one idle `certbot-dane deploy` process, times the runs a day: 2,880 for the
   old timer (OnCalendar=*:*:00/30), 86,400 / CONVERGE (58 min) for the new one at most, plus the new unit's
   `ExecStartPre=rm`. The worst idle run: the TLSA TTL is 1 s and runs are 1.1 s apart, so every run finds the
   memory of the TTL due for a refresh and rewrites every lineage's state file, as an hourly run does for any
   TTL under 58 min (with the old timer, only once per TTL: its figure is the worst case too). The old design
   runs the old code (`git archive` of OLD, the tree just before the wake-up), the new one this tree with
   CERTBOT_DANE_WAKE=systemd (an idle run arms nothing: on this host, where systemd is not PID 1, systemd-run
   would fail, and the run with it). Runs of the two are interleaved; medians.
2. systemd's own CPU per start of certbot-dane.service (PID 1 of a booted machine, /proc/<pid>/stat), which
   both designs pay per run: the machine of tests/test_systemd_boot.py.
3. Lag from the safe moment to the deploy, under a real systemd (two machines booted side by side, one per
   design, each with its own units and code): each rollover hands a fresh certificate to the deploy hook (as
   certbot does after a renewal), then waits. The safe moment is the gate's (served_at + the wait, read from
   the state file); the deploy moment is the mtime of the new <deploy_dir>/<lineage> symlink (made just before
   the rename). Each rollover's wait is a random 4-34 s (min_wait, the same sequence for both designs), so safe
   moments fall at random phases of the old timer's 30 s ticks, as they do in the field.

Run as root: .venv/bin/python bench/wake.py [--rollovers 12] [--runs 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certbot_dane import certificate, schedule  # noqa: E402
from sandbox import nspawn  # noqa: E402
from sandbox.fleet import write_certificate, write_fleet  # noqa: E402
from sandbox.servers import PRIMARY_ADDRESS, Sandbox  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OLD = "38e5593"
"""The last commit with the old design (certbot-dane.timer every 30 s, no wake-up)."""
OLD_RUNS_A_DAY = 86400 / 30
NEW_RUNS_A_DAY = 86400 / schedule.CONVERGE
PYTHON = Path(sys.executable)
TTL = 2
IDLE_TTL = 1


def old_tree(base: Path) -> Path:
    """The old design's code and units, from git (no worktree: nothing in .git changes). Not under /tmp: the
    unit's PrivateTmp= would hide it from the run in the machine."""
    tree = base / "old"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD, "certbot_dane", "systemd"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def command(design: str, old: Path, config: Path) -> tuple[list[str], dict[str, str]]:
    """How each design's timer runs `certbot-dane deploy` (the environment its unit gives it)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    if design == "old":
        return [str(PYTHON), "-m", "certbot_dane.cli", "-c", str(config), "deploy"], {**env, "PYTHONPATH": str(old)}
    return [str(PYTHON.parent / "certbot-dane"), "-c", str(config), "deploy"], {**env, "CERTBOT_DANE_WAKE": "systemd"}


def cpu_of(args: list[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one whole process (and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {done.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def idle_cpu(box: Sandbox, base: Path, old: Path, sizes: list[int], runs: int) -> list[dict[str, object]]:
    results = []
    rm_cpu = statistics.median(cpu_of(["/bin/rm", "-f", str(base / "no-such-request")], {}) for _ in range(runs))
    for count in sizes:
        hosts = [f"idle{count}-{i}.example.org" for i in range(count)]
        le = base / f"le{count}"
        write_fleet(le, hosts, age=datetime.timedelta(hours=2))
        config = box.write_config(base / f"idle{count}.toml", state_dir=base / f"state{count}",
                                  deploy_dir=base / f"live{count}", letsencrypt_dir=le,
                                  lineages={h: [f"_25._tcp.{h}"] for h in hosts},
                                  lineage_extra=f"tlsa_ttl = {IDLE_TTL}")
        for design in ("new", "old", "new"):  # bootstrap, then a warm-up run of each
            cpu_of(*command(design, old, config))
        cpus: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(runs):
            for design in (("old", "new") if r % 2 == 0 else ("new", "old")):
                time.sleep(IDLE_TTL + 0.1)  # the TTL memory is due for a refresh: every state file is rewritten
                cpus[design].append(cpu_of(*command(design, old, config)))
        old_run, new_run = statistics.median(cpus["old"]), statistics.median(cpus["new"])
        results.append({"lineages": count, "old_run_cpu_s": cpus["old"], "new_run_cpu_s": cpus["new"],
                        "rm_cpu_s": rm_cpu, "old_cpu_s_a_day": old_run * OLD_RUNS_A_DAY,
                        "new_cpu_s_a_day": (new_run + rm_cpu) * NEW_RUNS_A_DAY})
    return results


class Host:
    """A booted machine with one design's units, code and a lineage, for the lag measurement."""

    def __init__(self, machine: nspawn.Machine, box: Sandbox, design: str, old: Path) -> None:
        self.machine, self.box, self.design, self.old = machine, box, design, old
        self.name = f"lag-{design}.example.org"
        self.root = Path(f"/proc/{machine.leader}/root")

    def install(self) -> None:
        m, units = self.machine, (self.old if self.design == "old" else REPO) / "systemd"
        if self.design == "old":
            wrapper = f'#!/bin/sh\nPYTHONPATH={self.old} exec {PYTHON} -m certbot_dane.cli "$@"\n'
            m.write("/usr/local/bin/certbot-dane", wrapper, 0o755)
        else:
            m.run(["ln", "-s", str(PYTHON.parent / "certbot-dane"), "/usr/local/bin/certbot-dane"], check=True)
        m.write("/etc/certbot-dane/tsig.key", self.box.key.path.read_text(), 0o600)
        for unit in sorted(units.glob("certbot-dane.*")):
            m.write(f"/etc/systemd/system/{unit.name}", unit.read_text())
        self.configure(0)  # the first certificate goes live at once, in the hook (the old unit could not make the
        m.run(["systemctl", "daemon-reload"], check=True)  # deploy directory: test_systemd_boot.py)
        enable = ["certbot-dane.timer"] + (["certbot-dane.path"] if self.design == "new" else [])
        m.run(["systemctl", "enable", "--now", *enable], check=True)
        self.hand_over(age=datetime.timedelta(hours=2))  # the first certificate: no RRset yet, deployed at once

    def configure(self, wait: int) -> None:
        self.machine.write("/etc/certbot-dane/certbot-dane.toml", "\n".join([
            "[dns]", f'server = "{PRIMARY_ADDRESS}"', f"port = {self.box.port}",
            'key_file = "/etc/certbot-dane/tsig.key"', f'nameservers = ["{PRIMARY_ADDRESS}:{self.box.port}"]',
            "", f'[lineage."{self.name}"]', f'tlsa = ["_25._tcp.{self.name}"]', f"tlsa_ttl = {TTL}",
            f"min_wait = {round(wait)}", ""]), 0o600)

    def hand_over(self, age: datetime.timedelta) -> str:
        """A renewed certificate in live/, handed to this design's deploy hook as certbot does; its fingerprint."""
        with tempfile.TemporaryDirectory() as tmp:
            write_certificate(Path(tmp), self.name, age=age)
            for file in Path(tmp).iterdir():
                self.machine.write(f"/etc/letsencrypt/live/{self.name}/{file.name}", file.read_text(), 0o600)
            fingerprint = certificate.fingerprint((Path(tmp) / "cert.pem").read_bytes())
        env = {"RENEWED_LINEAGE": f"/etc/letsencrypt/live/{self.name}",
               "CERTBOT_DANE_CONFIG": "/etc/certbot-dane/certbot-dane.toml"}
        if self.design == "old":
            env["PYTHONPATH"] = str(self.old)
        self.machine.run([str(PYTHON), "-m", "certbot_dane.hooks", "deploy"], env=env, check=True)
        return fingerprint

    def state(self) -> dict[str, object] | None:
        try:
            return json.loads((self.root / f"var/lib/certbot-dane/lineages/{self.name}.json").read_text())
        except (OSError, ValueError):
            return None

    def rollover(self, number: int, wait: int) -> dict[str, float]:
        """Renew, then watch: the gate's safe moment, and the moment the new certificate went live."""
        self.configure(wait)
        handed = time.time()
        fingerprint = self.hand_over(age=datetime.timedelta(hours=1, seconds=-10 * number))
        safe = None
        deadline = time.monotonic() + wait + 120
        while True:
            st = self.state() or {}
            staged, deployed = st.get("staged"), st.get("deployed")
            if isinstance(staged, dict) and staged.get("fingerprint") == fingerprint and staged.get("served_at"):
                safe = float(staged["served_at"]) + max(2 * TTL, wait)
            if isinstance(deployed, dict) and deployed.get("fingerprint") == fingerprint:
                break
            if time.monotonic() > deadline:
                sys.exit(f"{self.design}: rollover {number} did not deploy")
            time.sleep(0.02)
        live = os.lstat(self.root / "etc/certbot-dane/live" / self.name).st_mtime
        assert safe is not None, f"{self.design}: the gate's clock was never seen"
        return {"wait": wait, "handed": handed, "safe": safe, "deployed": live, "lag": live - safe,
                "renewal_to_deploy": live - handed}


def systemd_cost(host: Host, starts: int) -> float:
    """PID 1's CPU seconds per idle start of certbot-dane.service (the run itself not included)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def pid1() -> float:
        fields = (Path(f"/proc/{host.machine.leader}/stat").read_text().rsplit(")", 1)[1]).split()
        return (int(fields[11]) + int(fields[12])) / ticks

    before = pid1()
    for _ in range(starts):
        host.machine.run(["systemctl", "start", "certbot-dane.service"], check=True)
    return (pid1() - before) / starts


def lag(box: Sandbox, base: Path, old: Path, rollovers: int) -> tuple[dict[str, list[dict[str, float]]], float]:
    rng = random.Random(11)
    waits = [rng.randint(4, 34) for _ in range(rollovers)]  # min_wait is whole seconds
    with nspawn.Machine(nspawn.image(), base / "old.log", binds=[*nspawn.host_python_binds(), old],
                        name="bench-old") as old_machine, \
            nspawn.Machine(nspawn.image(), base / "new.log", binds=[*nspawn.host_python_binds(), old],
                           name="bench-new") as new_machine:
        hosts = {"old": Host(old_machine, box, "old", old), "new": Host(new_machine, box, "new", old)}
        for host in hosts.values():
            host.install()
        cost = systemd_cost(hosts["new"], 20)

        def series(host: Host) -> list[dict[str, float]]:
            found = []
            for number, wait in enumerate(waits, 1):
                found.append(host.rollover(number, wait))
                print(f"  {host.design} rollover {number}/{len(waits)}: wait {wait:5.2f} s, lag "
                      f"{found[-1]['lag']:6.2f} s", flush=True)
            return found

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = {design: pool.submit(series, host) for design, host in hosts.items()}
            return {design: future.result() for design, future in futures.items()}, cost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rollovers", type=int, default=12, help="rollovers per design (default 12)")
    parser.add_argument("--runs", type=int, default=7, help="idle runs per design and size (default 7)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 200])
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    if os.geteuid() != 0 or nspawn.missing_programs() or shutil.which("git") is None:
        sys.exit("run as root with systemd-nspawn, mmdebstrap, nsenter and git (scripts/setup.sh installs them)")
    nspawn.DEFAULT_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=nspawn.DEFAULT_CACHE) as kept, \
            Sandbox(Path(tmp) / "sandbox", pebble=False) as box:
        base = Path(tmp)
        old = old_tree(Path(kept))
        print(f"idle CPU: {args.runs} runs per design and size, interleaved", flush=True)
        idle = idle_cpu(box, base, old, args.sizes, args.runs)
        print(f"lag: {args.rollovers} rollovers per design, two machines side by side", flush=True)
        lags, cost = lag(box, base, old, args.rollovers)
    load = os.getloadavg()
    print()
    print(f"idle host, CPU seconds a day (median of {args.runs} whole `certbot-dane deploy` processes; old: "
          f"{OLD_RUNS_A_DAY:.0f} runs a day, new: {NEW_RUNS_A_DAY:.1f} runs a day + ExecStartPre=rm "
          f"{idle[0]['rm_cpu_s']:.4f} s)")
    print(f"{'lineages':>8}  {'old run':>8}  {'new run':>8}  {'old CPU-s/day':>14}  {'new CPU-s/day':>14}")
    for row in idle:
        old_runs, new_runs = row["old_run_cpu_s"], row["new_run_cpu_s"]
        assert isinstance(old_runs, list) and isinstance(new_runs, list)
        print(f"{row['lineages']:>8}  {statistics.median(old_runs):8.3f}  {statistics.median(new_runs):8.3f}  "
              f"{row['old_cpu_s_a_day']:14.1f}  {row['new_cpu_s_a_day']:14.2f}")
    print(f"systemd (PID 1) per start of the service: {cost * 1000:.1f} ms CPU: {cost * OLD_RUNS_A_DAY:.1f} "
          f"CPU-s/day old, {cost * NEW_RUNS_A_DAY:.2f} new")
    print()
    print(f"lag from the safe moment to the deploy, {args.rollovers} rollovers each (seconds)")
    print(f"{'design':>6}  {'median':>7}  {'max':>7}  {'min':>7}  {'renewal->deploy median':>22}")
    for design in ("old", "new"):
        values = [r["lag"] for r in lags[design]]
        total = statistics.median(r["renewal_to_deploy"] for r in lags[design])
        print(f"{design:>6}  {statistics.median(values):7.2f}  {max(values):7.2f}  {min(values):7.2f}  {total:22.2f}")
    print()
    print(f"machine: nproc={os.cpu_count()}, python {sys.version.split()[0]}, load average at end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"idle": idle, "systemd_cpu_s_per_start": cost, "lag": lags}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
