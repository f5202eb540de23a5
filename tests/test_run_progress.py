"""Progress in simulated time (issue 16): a wall-clock sampler reads each running generation's clock
and its VMs done, on either path (in this process, or generations side by side in forked workers),
and reading changes nothing in the results."""

from __future__ import annotations

from collections import defaultdict

import pytest
from test_parallel_generations import GENS, scenario

import cluster_sim
from cluster_sim import simulation
from cluster_sim.cluster.nodes import LocalBackend
from cluster_sim.cluster.topology import lower_bound_s
from cluster_sim.results import summary_json
from cluster_sim.scenario.placement import node_name, place_fleet
from cluster_sim.simulation import SimProgress


@pytest.mark.parametrize("workers", [1, 3], ids=["in-process", "side-by-side"])
def test_sampling_progress_leaves_the_results_byte_identical_and_reads_forward(workers: int) -> None:
    sc = scenario(vms=40)
    plain = cluster_sim.run(sc, backend="local", workers=workers)
    seen: dict[str, list[SimProgress]] = defaultdict(list)
    watched = cluster_sim.run(sc, backend="local", workers=workers, progress_interval_s=0.001,
                              sim_progress=lambda g, w: seen[g].append(w))
    for a, b in zip(plain.generations, watched.generations, strict=True):
        assert summary_json(a.summary) == summary_json(b.summary)
        assert list(a.trace.lines()) == list(b.trace.lines())
    assert set(seen) <= set(GENS)
    for gen, readings in seen.items():  # (how many arrive depends on the machine's speed; what they say does not)
        end = watched.by_generation()[gen].summary.sim_end_s
        assert [w.sim_s for w in readings] == sorted(w.sim_s for w in readings)
        assert all(0 <= w.sim_s <= end + 1e-6 for w in readings)
        assert all(w.vms_total in (0, 42) and 0 <= w.vms_done <= w.vms_total for w in readings)
        assert [w.vms_done for w in readings] == sorted(w.vms_done for w in readings)


def test_the_reading_at_the_end_of_a_generation_is_its_clock_and_every_vm_done() -> None:
    sc = scenario(vms=10)
    reads = []
    backend = LocalBackend([node_name(i) for i in range(sc.cluster.nodes)])
    try:
        g = simulation.run_generation(sc, "ws2012r2", backend, watch=reads.append)
    finally:
        backend.close()
    (read,) = reads
    end = read()
    # a full job's guess of the end: its start (0 s) plus the copy's lower bound for every VM's used data
    used_mib = sum(v.used_mib for v in place_fleet(sc))
    assert end.sim_s == pytest.approx(g.summary.sim_end_s, abs=1e-6)
    assert end == SimProgress(sim_s=end.sim_s, vms_done=12, vms_total=12, job=0, jobs=1, mode="full",
                              expected_end_s=lower_bound_s(sc, used_mib))
