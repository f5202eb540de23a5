"""Scaling benchmarks: cost per VM from 800 to 10,000 VMs, the 8000vm-64node scenario, and the
headline command against bare SimPy. Run by `make bench`; targets are printed, never tested.

Cases (each in a fresh subprocess, so its time and memory are its own):
- headline: `cluster-sim run scenarios/800vm-8node.yaml --backend local` with its report, as a
  user types it (start-up, the four generations side by side, writing, the report), best of
  REPEAT, against 1,000,000 bare SimPy process steps (one process yielding 1,000,000 timeouts)
  measured in the same bench run, best of REPEAT. Target: <= 2x. Shown with it, to say where the
  time goes: the same command with --no-report, and `cluster-sim --version` (start-up), best of REPEAT.
- scale: the headline scenario scaled to 800, 1,600, 3,200, 8,000 and 10,000 VMs
  (benchmarks/scaling.py; 8,000 is scenarios/8000vm-64node.yaml), all four generations on the
  local backend side by side (`cluster_sim.run`, as `cluster-sim run --no-report` does), once
  each. Wall, CPU (all processes), events, events/s, peak memory and the cost per VM.
  Targets: 8000vm-64node <= 30 s wall and <= 2 GiB; 10,000 VMs <= 40 s; the wall per VM at
  10,000 VMs at most 1.5x the wall per VM at 800.

Peak memory is the highest total PSS (proportional set size: shared pages split between the
processes sharing them) of the case's process tree, sampled every 50 ms from /proc. The machine
may be shared: before each case the bench waits (up to a minute) for other processes to leave
the cores alone, says how many cores they used during the case, and reports a wall-time target
missed while they used more than QUIET cores as not measurable (the CPU time is still shown).
A pure-Python busy loop is timed before and after.

    .venv/bin/python benchmarks/scale_bench.py [--quick]   (--quick: 800 and 1,600 VMs only)
"""

from __future__ import annotations

import itertools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import busy_loop_s  # noqa: E402
from scaling import render, scaled_headline, without_comments  # noqa: E402
from sweep_bench import CpuMeter, wait_for_quiet  # noqa: E402

HEADLINE = ROOT / "scenarios" / "800vm-8node.yaml"
BIG = ROOT / "scenarios" / "8000vm-64node.yaml"
SIZES = (800, 1600, 3200, 8000, 10000)
REPEAT = 3
QUIET = 0.3  # cores used by other processes under which a wall time counts
CLI = str(Path(sys.executable).parent / "cluster-sim")

SIMPY_STEPS = r"""
import time, simpy
def proc(env, n):
    for _ in range(n):
        yield env.timeout(1)
env = simpy.Environment()
env.process(proc(env, 1_000_000))
t0 = time.perf_counter()
env.run()
print(time.perf_counter() - t0)
"""

SCALE_CASE = r"""
import json, sys, time
import cluster_sim
sc = cluster_sim.load_scenario(sys.argv[1], ["run.backend=local"])
t0 = time.perf_counter()
res = cluster_sim.run(sc)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "events": sum(g.sim_events for g in res.generations), "vms": sc.vm_count(),
                  "nodes": sc.cluster.nodes, "audit_ok": all(g.summary.audit.ok for g in res.generations),
                  "gens": {g.summary.generation: g.wall_s for g in res.generations}}))
"""


def _tree_pids(root: int) -> list[int]:
    """root and its descendants, from /proc/PID/task/TID/children."""
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                    stack += [int(x) for x in fh.read().split()]
        except OSError:
            continue
    return out


def _pss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measured(cmd: list[str], timeout_s: float = 1800) -> dict:
    """Run cmd; its wall, CPU (the process and its children), peak total PSS and other cores used."""
    meter = CpuMeter().start()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], sum(_pss_mib(p) for p in _tree_pids(proc.pid)))
            done.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out, errs = proc.communicate(timeout=timeout_s)
    finally:
        done.set()
        th.join()
    wall = time.perf_counter() - t0
    usage = meter.stop()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"benchmark case {' '.join(cmd[:4])} failed ({proc.returncode}):\n{errs[-3000:]}")
    return {"wall_total_s": wall, "cpu_s": cpu, "other_cores": usage["other_cores"],
            "peak_mib": peak[0], "stdout": out}


def simpy_reference() -> float:
    wait_for_quiet(30.0, QUIET)
    return min(float(measured([sys.executable, "-c", SIMPY_STEPS])["stdout"].split()[-1]) for _ in range(REPEAT))


def _best_of(command: Callable[[int], list[str]]) -> dict:
    """The quickest of REPEAT runs of command(i), each on a quiet machine (`measured`'s numbers)."""
    runs = []
    for i in range(REPEAT):
        wait_for_quiet(30.0, QUIET)
        runs.append(measured(command(i)))
    return min(runs, key=lambda r: r["wall_total_s"])


def headline_command(tmp: Path, *extra: str) -> dict:
    return _best_of(lambda i: [CLI, "run", str(HEADLINE), "--backend", "local", *extra,
                               "--out", str(tmp / f"headline{''.join(extra)}-{i}")])


def start_up() -> dict:
    """`cluster-sim --version`: the interpreter and the command line's imports, nothing run."""
    return _best_of(lambda _i: [CLI, "--version"])


def scale_case(path: Path) -> dict:
    wait_for_quiet(60.0, QUIET)
    r = measured([sys.executable, "-c", SCALE_CASE, str(path)])
    r.update(json.loads(r.pop("stdout").strip().splitlines()[-1]))
    return r


def two_core_floor(times: list[float], cores: int = 2) -> float:
    """The least wall time in which these runs, each on one core and never split, can all end on
    `cores` cores: the best assignment of runs to cores (every one tried; four generations give
    2**4), its busiest core's total."""
    best = math.inf
    for assign in itertools.product(range(cores), repeat=len(times)):
        load = [0.0] * cores
        for t, c in zip(times, assign, strict=True):
            load[c] += t
        best = min(best, max(load))
    return best


def _generations_line(r: dict) -> str:
    gens = r["gens"]
    times = ", ".join(f"{g} {t:.1f}" for g, t in gens.items())
    return (f"  its generations' own wall times (s, as they ran side by side): {times}; none is split, so on 2 "
            f"cores the four end at the earliest at {two_core_floor(list(gens.values())):.1f} s")


def _mark(ok: bool, *cases: dict) -> str:
    if ok:
        return "[green]met[/]"
    busy = max((c.get("other_cores", 0.0) for c in cases), default=0.0)
    if busy > QUIET:
        return f"[yellow]not measurable: other processes used {busy:.2f} cores meanwhile[/]"
    return "[red]missed[/]"


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = SIZES[:2] if quick else SIZES
    console = Console(width=160)
    load0 = os.getloadavg()
    calib_before = busy_loop_s()
    rows: list[tuple[int, dict]] = []
    with tempfile.TemporaryDirectory(prefix="cluster-sim-bench-") as tmpdir, console.status("benchmarks") as st:
        tmp = Path(tmpdir)
        st.update("1,000,000 bare SimPy steps")
        simpy_s = simpy_reference()
        st.update("headline command")
        head = headline_command(tmp)
        st.update("headline command without its report, start-up")
        bare = headline_command(tmp, "--no-report")
        started = start_up()
        for vms in sizes:
            st.update(f"{vms} VMs, four generations")
            if vms == 8000:
                path = BIG
                if without_comments(BIG.read_text(encoding="utf-8")) != render(scaled_headline(8000)):
                    console.print(f"[yellow]warning: {BIG.name} differs from benchmarks/scaling.py's 8000[/]")
            else:
                path = tmp / f"{vms}vm.yaml"
                path.write_text(render(scaled_headline(vms)), encoding="utf-8")
            rows.append((vms, scale_case(path)))
    calib_after = busy_loop_s()
    load1 = os.getloadavg()

    t = Table(title="cluster_sim scaling: the headline mix scaled, all four generations side by side, local backend")
    for h in ("VMs", "nodes", "wall (s)", "CPU (s)", "other cores", "events", "events/s", "peak (MiB)",
              "wall/VM (ms)", "CPU/VM (ms)"):
        t.add_column(h, justify="right")
    for vms, r in rows:
        t.add_row(f"{vms:,}", str(r["nodes"]), f"{r['wall_s']:.2f}", f"{r['cpu_s']:.1f}", f"{r['other_cores']:.2f}",
                  f"{r['events']:,}", f"{r['events'] / r['wall_s']:,.0f}", f"{r['peak_mib']:.0f}",
                  f"{1000 * r['wall_s'] / vms:.2f}", f"{1000 * r['cpu_s'] / vms:.2f}")
    console.print(t)
    console.print(f"headline command (`cluster-sim run {HEADLINE.relative_to(ROOT)} --backend local`, report "
                  f"included, best of {REPEAT}): {head['wall_total_s']:.2f} s wall, {head['cpu_s']:.1f} s CPU, "
                  f"peak {head['peak_mib']:.0f} MiB, other processes used {head['other_cores']:.2f} cores")
    console.print(f"1,000,000 bare SimPy process steps: {simpy_s:.2f} s (best of {REPEAT})")
    console.print(f"machine: load average {load0[0]:.1f} before, {load1[0]:.1f} after; a pure-Python loop of 5M "
                  f"additions took {calib_before:.2f} s before and {calib_after:.2f} s after (quiet: about 0.2 s)")
    ratio = head["wall_total_s"] / simpy_s
    console.print(f"target headline command <= 2x 1M SimPy steps: {ratio:.2f}x {_mark(ratio <= 2, head)}")
    console.print(f"  where its time goes: start-up (`cluster-sim --version`: the interpreter and the command line's "
                  f"imports) {started['wall_total_s']:.2f} s; the same command with --no-report (start-up, the four "
                  f"generations, their folders) {bare['wall_total_s']:.2f} s wall, {bare['cpu_s']:.1f} s CPU "
                  f"({bare['wall_total_s'] / simpy_s:.2f}x); the report (timeline.png and trace.perfetto.json per "
                  f"generation, report.html) adds {head['wall_total_s'] - bare['wall_total_s']:.2f} s wall, "
                  f"{head['cpu_s'] - bare['cpu_s']:.1f} s CPU (all best of {REPEAT})")
    by = dict(rows)
    if 8000 in by:
        r = by[8000]
        ok = r["wall_s"] <= 30 and r["peak_mib"] <= 2048
        mark = _mark(ok, r) if r["peak_mib"] <= 2048 else _mark(False)
        console.print(f"target {BIG.name}, four generations <= 30 s wall, peak <= 2 GiB: {r['wall_s']:.1f} s, "
                      f"{r['peak_mib']:.0f} MiB {mark}")
        console.print(_generations_line(r))
    if 10000 in by:
        r = by[10000]
        console.print(f"target 10,000 VMs <= 40 s wall: {r['wall_s']:.1f} s {_mark(r['wall_s'] <= 40, r)}")
        console.print(_generations_line(r))
    lo, hi = min(by), max(by)
    growth = (by[hi]["wall_s"] / hi) / (by[lo]["wall_s"] / lo)
    cpu_growth = (by[hi]["cpu_s"] / hi) / (by[lo]["cpu_s"] / lo)
    console.print(f"target cost per VM from {lo:,} to {hi:,} VMs grows <= 1.5x: wall/VM {growth:.2f}x "
                  f"{_mark(growth <= 1.5, by[lo], by[hi])}; CPU/VM {cpu_growth:.2f}x {_mark(cpu_growth <= 1.5)}")


if __name__ == "__main__":
    main()
