"""The garbage collector's thresholds during a simulation (kernel/collector.py): fewer young
collections inside, Python's own thresholds back after, however the block ends."""

from __future__ import annotations

import gc

import pytest

import cluster_sim
from cluster_sim.kernel.collector import YOUNG_COLLECTION_EVERY_OBJECTS, fewer_collections
from cluster_sim.simulation.assemble import run_generation


@pytest.fixture
def python_thresholds():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_a_block_runs_with_a_young_collection_every_20000_objects_and_gets_700_10_10_back_after_an_error(
        python_thresholds) -> None:
    assert YOUNG_COLLECTION_EVERY_OBJECTS == 20_000
    with pytest.raises(ValueError), fewer_collections():
        assert gc.get_threshold() == (20_000, 10, 10)
        raise ValueError("a run that fails")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_young_threshold_set_by_the_caller_is_not_lowered(python_thresholds) -> None:
    gc.set_threshold(50_000, 5, 3)
    with fewer_collections():
        assert gc.get_threshold() == (50_000, 5, 3)
    assert gc.get_threshold() == (50_000, 5, 3)


def test_a_generation_simulates_with_fewer_young_collections_and_leaves_the_thresholds_as_they_were(
        python_thresholds) -> None:
    from plan_helpers import TINY_FILE

    from cluster_sim.cluster.nodes import LocalBackend
    from cluster_sim.scenario.placement import node_name

    sc = cluster_sim.load_scenario(TINY_FILE)  # 2 nodes, 6 VMs
    seen: list[tuple[int, int, int]] = []
    backend = LocalBackend([node_name(i) for i in range(sc.cluster.nodes)])
    g = run_generation(sc, "ws2016", backend, watch=lambda _where: seen.append(gc.get_threshold()))
    assert seen == [(20_000, 10, 10)]  # read while the cluster was set up, before it ran
    assert g.summary.audit.ok
    assert gc.get_threshold() == (700, 10, 10)
