"""Benchmarks: `make bench`. Each case runs in a fresh subprocess so its peak memory is its own.

Cases:
- steady: the 800-VM scenario without a backup (steady VM I/O), per backend
- gen:    the 800-VM backup, one generation at a time, per backend, in one process
- all4:   all four generations as `cluster-sim run` does it on the local backend: side by side,
          one forked process per core (target: <= 5 s wall)
- all4 serial: the same one after the other in one process (what a single core does)
- noverify: all four serially without the data plane, to show what verification costs (target:
          the run with verification <= 2x the time without, peak memory <= 2 GiB)
Each case runs REPEAT times in its process and the best wall counts (the machine is shared and
its speed drifts; a busy-loop reference, timed before and after, shows how fast it was). Ray cases
report Ray start-up (ray.init + node actors) apart from the run itself. Targets are checked here
and printed; they are benchmarks, never unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "800vm-8node.yaml"

REPEAT = 3

CASE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import cluster_sim
from cluster_sim.cluster.nodes import LocalBackend, RayBackend
from cluster_sim.scenario.placement import node_name
from cluster_sim.simulation import RaySession, run, run_generation
kind, backend, gen, path, repeat = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
sc = cluster_sim.load_scenario(path, ["backup.verify=false"] if kind == "noverify" else [])
if kind == "steady":
    sc = sc.model_copy(update={"backup": None})
nodes = [node_name(i) for i in range(sc.cluster.nodes)]
startup = 0.0
session = None
if backend == "ray":
    s0 = time.perf_counter()
    session = RaySession(num_cpus=2)
    be = RayBackend(nodes)
    startup = time.perf_counter() - s0
else:
    be = LocalBackend(nodes)
gens = [None] if kind == "steady" else (sc.backup.generations if gen == "all" else [gen])
walls = []
for _ in range(repeat):
    w0 = time.perf_counter()
    events = 0
    if kind == "side":
        events = sum(g.sim_events for g in run(sc, backend="local").generations)
    else:
        for g in gens:
            be.revive_all()
            events += run_generation(sc, g, be).sim_events
    walls.append(time.perf_counter() - w0)
be.close()
if session:
    session.close()
peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
print(json.dumps({"wall_s": min(walls), "walls": walls, "startup_s": startup, "events": events, "peak_mib": peak}))
"""


def busy_loop_s(n: int = 5_000_000) -> float:
    """Seconds for a pure-Python loop of n additions (best of 3): how fast this machine is now."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        s = 0
        for i in range(n):
            s += i
        best = min(best, time.perf_counter() - t0)
    return best


def run_case(kind: str, backend: str, gen: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CASE, kind, backend, gen, str(SCENARIO), str(REPEAT)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark case {kind}/{backend}/{gen} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    console = Console(width=150)
    rows = []
    cases = [("steady", "local", "-"), ("steady", "ray", "-")]
    for gen in ("ws2008r2", "ws2012", "ws2012r2", "ws2016"):
        cases += [("gen", "local", gen), ("gen", "ray", gen)]
    cases += [("all4", "local", "all"), ("all4 serial", "local", "all"), ("noverify", "local", "all")]
    calib_before = busy_loop_s()
    with console.status("running benchmarks") as status:
        for kind, backend, gen in cases:
            status.update(f"{kind} {backend} {gen}")
            mode = {"all4": "side", "all4 serial": "gen"}.get(kind, kind)
            r = run_case(mode, backend, gen if gen != "-" else "all")
            rows.append((kind, backend, gen, r))
    calib_after = busy_loop_s()
    t = Table(title=f"cluster_sim benchmarks ({SCENARIO.name}, 800 VMs, 8 nodes; best of {REPEAT})")
    for h in ("case", "backend", "generation", "wall (s)", "all walls (s)", "Ray start-up (s)", "events",
              "events/s", "peak memory (MiB)"):
        t.add_column(h, justify="right")
    for kind, backend, gen, r in rows:
        t.add_row(kind, backend, gen, f"{r['wall_s']:.2f}", " ".join(f"{w:.2f}" for w in r["walls"]),
                  f"{r['startup_s']:.1f}" if backend == "ray" else "-",
                  f"{r['events']:,}", f"{r['events'] / r['wall_s']:,.0f}", f"{r['peak_mib']:.0f}")
    console.print(t)
    console.print(f"machine speed: a pure-Python loop of 5M additions took {calib_before:.2f} s before and "
                  f"{calib_after:.2f} s after (a quiet modern core: about 0.2 s)")
    local = {g: r["wall_s"] for k, b, g, r in rows if k == "gen" and b == "local"}
    ray = {g: r["wall_s"] for k, b, g, r in rows if k == "gen" and b == "ray"}
    all4 = next(r["wall_s"] for k, b, g, r in rows if k == "all4")
    serial = next(r["wall_s"] for k, b, g, r in rows if k == "all4 serial")
    ratio = sum(ray.values()) / sum(local.values())
    nov = next(r for k, b, g, r in rows if k == "noverify")
    withv = next(r for k, b, g, r in rows if k == "all4 serial")
    cost = withv["wall_s"] / nov["wall_s"]
    console.print(f"target all four generations, local backend <= 5 s: {all4:.2f} s side by side "
                  f"({serial:.2f} s one after the other) "
                  f"[{'green' if all4 <= 5 else 'red'}]{'met' if all4 <= 5 else 'missed'}[/]")
    console.print(f"target Ray <= 2x local after start-up (each generation, one process each): {ratio:.2f}x "
                  f"[{'green' if ratio <= 2 else 'red'}]{'met' if ratio <= 2 else 'missed'}[/]")
    ok = cost <= 2 and withv["peak_mib"] <= 2048
    console.print(f"target verification <= 2x without, peak <= 2 GiB: {cost:.2f}x, {withv['peak_mib']:.0f} MiB "
                  f"[{'green' if ok else 'red'}]{'met' if ok else 'missed'}[/]")


if __name__ == "__main__":
    main()
