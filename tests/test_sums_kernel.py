"""The network's sums at a rate change compiled (kernel/fluid/_sums.pyx) against numpy's expressions
(kernel/fluid/classes.py, allocation.py, network.py): the same numbers to the bit, by hand and on
random arrays. Whole runs compiled and numpy-only are compared in tests/test_latency_kernel.py (the
switch turns every compiled module off)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cluster_sim.kernel.compiled import NUMPY_ENV, compiled
from cluster_sim.kernel.fluid import FluidNetwork

sums = compiled("cluster_sim.kernel.fluid._sums")
needs_compiled = pytest.mark.skipif(sums is None, reason="kernel/fluid/_sums.pyx not built (no C compiler at install)")
pytestmark = needs_compiled


def _bits(x: float) -> bytes:
    return np.float64(x).tobytes()


def test_a_sum_adds_as_numpy_does_not_one_after_the_other():
    # 1e16 then sixteen 1.0: one after the other each 1.0 is lost (1e16 + 1 rounds back to 1e16:
    # the spacing of doubles there is 2); numpy adds the sixteen ones first (pairwise), then 1e16
    a = np.array([1e16] + [1.0] * 16)
    assert sum(a.tolist()) == 1e16
    assert sums.numpy_sum(a) == 1e16 + 16 == float(a.sum())
    assert sums.numpy_sum(np.zeros(0)) == 0.0
    assert _bits(sums.numpy_sum(np.array([-0.0]))) == _bits(float(np.array([-0.0]).sum()))


@pytest.mark.parametrize("n", [*range(0, 40), 63, 64, 65, 127, 128, 129, 130, 255, 256, 257, 1000, 4099])
def test_a_sum_of_any_length_is_numpys_to_the_bit(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        a = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 17, n)  # (magnitudes far apart: order shows)
        assert _bits(sums.numpy_sum(a)) == _bits(float(a.sum()))
    if n:
        a = np.full(n, -0.0)
        assert _bits(sums.numpy_sum(a)) == _bits(float(a.sum()))
        a[n // 2] = math.nan
        assert math.isnan(sums.numpy_sum(a))


def _kernel(P, C, cap_tol, bind, ops_base, opc):
    arrays = [np.array(x, dtype=float) for x in (P, C, cap_tol)]
    bind = np.array(bind, dtype=bool)
    ob, oc = np.array(ops_base, dtype=float), np.array(opc, dtype=float)
    return sums.LinkSums(*arrays, bind.view(np.uint8), ob, oc), arrays, bind, ob, oc


def test_three_links_by_hand_loads_overloaded_links_and_ops():
    k, *_ = _kernel(P=[10.0, 5.0, 0.0], C=[[2.0, 0, 0], [1.0, 0, 0], [0, 0, 0]], cap_tol=[20.0, 7.0, 1.0],
                    bind=[True, False, False], ops_base=[1.0, 2.0], opc=[[0.5, 2.0], [0, 0], [0, 0]])
    lam = np.array([3.0, 0.0, 0.0])
    assert k.loads(lam, 0).tolist() == [16.0, 8.0, 0.0]  # 10 + 2 x 3, 5 + 1 x 3, 0
    assert k.overloaded(lam, 0) == [1]  # 8 > 7; link 0 (16 < 20, and it binds) is not
    load, by_class, ops = k.record(lam, 0)
    assert load.tolist() == [16.0, 8.0, 0.0]
    assert by_class.tolist() == [2.5, 8.0]  # 1 + 0.5 x 3, 2 + 2 x 3
    assert ops == 10.5


@pytest.mark.parametrize("seed", range(8))
def test_random_sums_are_numpys_expressions_to_the_bit(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 300)), int(rng.integers(1, 40))
    P = rng.standard_normal(n) * 1e3
    C = np.where(rng.random((n, n)) < 0.3, rng.random((n, n)) * 7.0, 0.0)
    cap = np.abs(P) * rng.uniform(0.5, 2.0, n)
    cap_tol = cap * (1 + 1e-12)
    bind = rng.random(n) < 0.1
    ops_base, opc = rng.standard_normal(k) * 1e4, rng.random((n, k)) * 50.0
    kern = sums.LinkSums(P, C, cap_tol, bind.view(np.uint8), ops_base, opc)
    for _ in range(30):
        lam = rng.random(n) * 100.0
        b = int(rng.integers(0, n))
        load = P + C[:, b] * lam.item(b)  # (classes.py `_loads`, allocation.py `_overloaded`, network.py `_record`)
        assert kern.loads(lam, b).tobytes() == load.tobytes()
        assert kern.overloaded(lam, b) == np.flatnonzero((load > cap_tol) & ~bind).tolist()
        got_load, got_by, got_ops = kern.record(lam, b)
        by_class = ops_base + opc[b] * lam.item(b)
        assert got_load.tobytes() == load.tobytes()
        assert got_by.tobytes() == by_class.tobytes()
        assert _bits(got_ops) == _bits(float(by_class.sum()))
        P += rng.standard_normal(n)  # (the kernel holds the arrays: it sees them change in place)
        bind[rng.integers(0, n)] ^= True


def test_re_pricing_by_hand_adds_each_flows_change_and_sets_its_ops():
    opm = [0.0, 3.0, 5.0, 7.0]
    slots, caps = np.array([1, 3], dtype=np.intp), np.array([10.0, 20.0])
    assert sums.steady_ops(opm, slots, caps, np.array([3.0, 7.0]), 100.0) is None  # no change: nothing written
    assert sums.steady_ops(opm, slots, caps, np.array([4.0, 7.0]), 100.0) == 110.0  # 100 + 10 x (4 - 3) + 20 x 0
    assert opm == [0.0, 4.0, 5.0, 7.0]


@pytest.mark.parametrize("seed", range(6))
def test_random_re_pricing_is_numpys_accumulation_to_the_bit(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    opm = (rng.random(3 * n) * 4.0).tolist()
    slots = rng.permutation(3 * n)[:n].astype(np.intp)
    caps = rng.random(n) * 300.0
    for _ in range(20):
        new = np.array(opm)[slots] * rng.uniform(1.0, 3.0, n)
        base = float(rng.standard_normal() * 1e5)
        old = np.array([opm[s] for s in slots])
        want = np.add.accumulate(np.concatenate(([base], caps * (new - old))))[-1]  # (network.py's numpy path)
        assert _bits(sums.steady_ops(opm, slots, caps, new, base)) == _bits(float(want))
        assert [opm[s] for s in slots] == new.tolist()


def test_the_network_uses_the_compiled_sums_unless_switched_off(monkeypatch):
    from simpy import Environment

    monkeypatch.setenv(NUMPY_ENV, "0")
    assert FluidNetwork(Environment(), {"a": 1.0})._sums_c is not None
    monkeypatch.setenv(NUMPY_ENV, "1")
    assert FluidNetwork(Environment(), {"a": 1.0})._sums_c is None


def test_the_three_scans_by_hand():
    k, *_ = _kernel(P=[0.0] * 3, C=[[0, 2.0, 0], [0, 0, 0], [0, math.nan, 0]], cap_tol=[1.0] * 3,
                    bind=[False] * 3, ops_base=[0.0], opc=[[0.0]] * 3)
    assert k.column_links(1) == [0, 2]  # (a NaN is not zero, as np.flatnonzero counts it)
    assert k.column_links(0) == []
    D, cap = np.array([5.0, 10.0 + 1e-6]), np.array([10.0, 10.0])
    assert sums.any_above({0}, D, cap, 1 + 1e-9) is False
    assert sums.any_above({0, 1}, D, cap, 1 + 1e-9) is True  # 10.000001 > 10.00000001
    # classes 0-3 on link 7: 0 and 2 frozen by it (levels 4 and 3), 1 capped (level 9), 3 frozen elsewhere
    state, level = [7, -1, 7, 5], [4.0, 9.0, 3.0, 1.0]
    assert sums.level_bounds({0, 1, 2, 3}, state, level, 7) == (3.0, 9.0)
    assert sums.level_bounds({3}, state, level, 7) == (math.inf, -math.inf)


@pytest.mark.parametrize("seed", range(6))
def test_the_three_scans_on_random_links_and_classes_are_numpys_and_pythons(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    C = np.where(rng.random((n, n)) < 0.2, rng.standard_normal((n, n)), 0.0)
    C[rng.random((n, n)) < 0.01] = math.nan
    kern = sums.LinkSums(np.zeros(n), C, np.ones(n), np.zeros(n, dtype=np.uint8), np.zeros(1), np.zeros((n, 1)))
    for b in range(n):
        assert kern.column_links(b) == np.flatnonzero(C[:, b]).tolist()  # (classes.py `_set_level`)
    D, cap = rng.random(n) * 10.0, rng.random(n) * 10.0
    for _ in range(50):
        check = set(rng.integers(0, n, int(rng.integers(1, 8))).tolist())
        grew = np.fromiter(check, dtype=np.intp, count=len(check))  # (steady.py `_steady_holds`)
        assert sums.any_above(check, D, cap, 1 + 1e-9) == bool((D[grew] > cap[grew] * (1 + 1e-9)).any())
    nc = int(rng.integers(1, 100))
    state = rng.integers(-2, 5, nc).tolist()
    level = (rng.random(nc) * 100.0).tolist()
    level[0] = math.nan
    for b in range(5):
        on = set(rng.integers(0, nc, int(rng.integers(0, nc))).tolist())
        lo, hi = math.inf, -math.inf  # (classes.py `_level_bounds`, Python's min and max)
        for c in on:
            if state[c] == b:
                lo = min(lo, level[c])
            elif state[c] == -1:
                hi = max(hi, level[c])
        assert sums.level_bounds(on, state, level, b) == (lo, hi)
