"""Benchmarks: `make bench`. Each case runs in a fresh subprocess so its peak memory is its own.

Cases:
- steady: the 800-VM scenario without a backup (steady VM I/O), per backend
- gen:    the 800-VM backup, one generation at a time, per backend
- all4:   all four generations in one run on the local backend (target: <= 5 s wall)
- noverify: the same without the data plane, to show what verification costs (target: the
          run with verification <= 2x the time without, peak memory <= 2 GiB)
Ray cases report Ray start-up (ray.init + node actors) apart from the run itself.
Targets are checked here and printed; they are benchmarks, never unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "800vm-8node.yaml"

CASE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import cluster_sim
from cluster_sim.cluster.nodes import LocalBackend, RayBackend
from cluster_sim.cluster.topology import node_name
from cluster_sim.simulation import RaySession, run_generation
kind, backend, gen = sys.argv[1], sys.argv[2], sys.argv[3]
sc = cluster_sim.load_scenario(sys.argv[4], ["backup.verify=false"] if kind == "noverify" else [])
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
w0 = time.perf_counter()
events = 0
for g in gens:
    be.revive_all()
    r = run_generation(sc, g, be)
    events += r.sim_events
wall = time.perf_counter() - w0
be.close()
if session:
    session.close()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall_s": wall, "startup_s": startup, "events": events, "peak_mib": peak}))
"""


def run_case(kind: str, backend: str, gen: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CASE, kind, backend, gen, str(SCENARIO)],
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
    cases.append(("all4", "local", "all"))
    cases.append(("noverify", "local", "all"))
    with console.status("running benchmarks") as status:
        for kind, backend, gen in cases:
            status.update(f"{kind} {backend} {gen}")
            r = run_case(kind if kind in ("steady", "noverify") else "gen", backend, gen if gen != "-" else "all")
            rows.append((kind, backend, gen, r))
    t = Table(title=f"cluster_sim benchmarks ({SCENARIO.name}, 800 VMs, 8 nodes)")
    for h in ("case", "backend", "generation", "wall (s)", "Ray start-up (s)", "events", "events/s", "peak memory (MiB)"):
        t.add_column(h, justify="right")
    for kind, backend, gen, r in rows:
        t.add_row(kind, backend, gen, f"{r['wall_s']:.2f}", f"{r['startup_s']:.1f}" if backend == "ray" else "-",
                  f"{r['events']:,}", f"{r['events'] / r['wall_s']:,.0f}", f"{r['peak_mib']:.0f}")
    console.print(t)
    local = {g: r["wall_s"] for k, b, g, r in rows if k == "gen" and b == "local"}
    ray = {g: r["wall_s"] for k, b, g, r in rows if k == "gen" and b == "ray"}
    all4 = next(r["wall_s"] for k, b, g, r in rows if k == "all4")
    ratio = sum(ray.values()) / sum(local.values())
    nov = next(r for k, b, g, r in rows if k == "noverify")
    withv = next(r for k, b, g, r in rows if k == "all4")
    cost = withv["wall_s"] / nov["wall_s"]
    console.print(f"target all four generations, local backend <= 5 s: {all4:.2f} s "
                  f"[{'green' if all4 <= 5 else 'red'}]{'met' if all4 <= 5 else 'missed'}[/]")
    console.print(f"target Ray <= 2x local after start-up: {ratio:.2f}x "
                  f"[{'green' if ratio <= 2 else 'red'}]{'met' if ratio <= 2 else 'missed'}[/]")
    ok = cost <= 2 and withv["peak_mib"] <= 2048
    console.print(f"target verification <= 2x without, peak <= 2 GiB: {cost:.2f}x, {withv['peak_mib']:.0f} MiB "
                  f"[{'green' if ok else 'red'}]{'met' if ok else 'missed'}[/]")


if __name__ == "__main__":
    main()
