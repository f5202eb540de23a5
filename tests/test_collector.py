"""The garbage collector's thresholds during a simulation (kernel/collector.py): fewer young
collections inside, Python's own thresholds back after, however the block ends."""

from __future__ import annotations

import gc
import weakref

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


class _Node:
    pass


def _full_collections() -> int:
    return gc.get_stats()[2]["collections"]


def test_garbage_of_a_block_that_reached_the_oldest_generation_is_freed_by_one_full_collection_at_its_end(
        python_thresholds) -> None:
    gc.collect()
    full = _full_collections()
    with fewer_collections():
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        gone = weakref.ref(a)
        # 500,000 lists kept: 25 young collections of 20,000, 2 middle ones (every 10 young), which
        # move the cycle to the oldest generation; no full collection inside (10 middle ones needed)
        kept = [[] for _ in range(500_000)]
        del a, b
        assert gone() is not None and _full_collections() == full
    assert gone() is None  # freed at the end, not left for the next run
    assert _full_collections() == full + 1
    del kept


def test_a_short_block_leaves_its_garbage_to_the_young_collections_without_a_full_one(python_thresholds) -> None:
    gc.collect()
    full = _full_collections()
    with fewer_collections():
        kept = [[] for _ in range(1_000)]  # fewer than one young collection's 20,000
    assert _full_collections() == full
    del kept


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


def test_a_process_that_runs_nothing_more_leaves_its_blocks_garbage_to_its_end(python_thresholds, monkeypatch) -> None:
    # The pool worker running a run's last unfinished generation (collect_after False): the block
    # that reached the oldest generation ends without the full collection (its process ends with
    # the pool, which frees everything); the cycle is still there after the block.
    from cluster_sim.kernel import collector

    monkeypatch.setattr(collector, "collect_after", lambda: False)
    gc.collect()
    full = _full_collections()
    with fewer_collections():
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        kept = [[] for _ in range(500_000)]  # (as above: the cycle reaches the oldest generation)
        del a, b
    assert gone() is not None and _full_collections() == full
    del kept
    gc.collect()
    assert gone() is None


def test_a_pool_worker_collects_after_each_generation_but_the_runs_last_unfinished_one(monkeypatch) -> None:
    # 4 generations (a count of generations not finished, shared by the workers), one after another
    # here. The first raises: it counts as finished (3 left). The next two end with 3 and 2
    # unfinished, their own included, and collect after theirs; the last ends as the run's last
    # (1: itself) and skips the collection: nothing runs beside it, its process ends with the pool.
    import multiprocessing as mp

    from cluster_sim.kernel import collector
    from cluster_sim.simulation import executors

    def one(sc, gen, watch=None):  # type: ignore[no-untyped-def]
        if gen == "boom":
            raise ValueError("a generation that fails")
        return gen, collector.collect_after()

    monkeypatch.setattr(executors, "_die_with_parent", lambda _pid: None)
    monkeypatch.setattr(executors, "_one_local", one)
    monkeypatch.setattr(collector, "collect_after", collector.collect_after)  # (restored after)
    for name in ("_UNFINISHED", "_PROGRESS_QUEUE", "_PROGRESS_INTERVAL"):  # (set by the initializer)
        monkeypatch.setattr(executors, name, None)
    count = mp.get_context("fork").Value("i", 4)
    executors._init_generation_worker(0, None, None, count)
    with pytest.raises(ValueError):
        executors._pool_generation(0, None, "boom")
    assert count.value == 3
    assert executors._pool_generation(1, None, "ws2012") == ("ws2012", True)
    assert executors._pool_generation(2, None, "ws2016") == ("ws2016", True)
    assert count.value == 1
    assert executors._pool_generation(3, None, "ws2008r2") == ("ws2008r2", False)
    assert count.value == 0
