"""The latency bookkeeping compiled (cluster/_latency.pyx) against numpy's expressions (cluster/io.py):
the same numbers to the bit, by hand, on random arrays, and on whole runs with each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cluster_sim
from cluster_sim.cluster import io
from cluster_sim.cluster.io import _ABOVE, _BELOW, _BIN_OF, _BINS, latency_kernel
from cluster_sim.kernel.compiled import NUMPY_ENV

ROOT = Path(__file__).resolve().parent.parent
compiled = latency_kernel()
needs_compiled = pytest.mark.skipif(compiled is None, reason="cluster/_latency.pyx not built (no C compiler at install)")


class _State:
    """The arrays a kernel works on, as IoModel keeps them."""

    def __init__(self, cap, load, hop_service, ops, ctrl, hops, counts, *, rho_max=0.98, iops=2000.0, s=0.5,
                 read_i=0, write_i=1):
        self.cap, self.load, self.hop_service, self.ops = (np.array(x, dtype=float) for x in (cap, load, hop_service, ops))
        self.rho_max, self.iops, self.s, self.read_i, self.write_i = rho_max, iops, s, read_i, write_i
        n = len(ctrl)
        self.act = np.arange(n, dtype=np.int64) * 2  # (every other row: rows that are not in use stay)
        self.ctrl = np.array(ctrl, dtype=np.int64)
        self.h0, self.h1, self.h2 = (np.array(h, dtype=np.int64) for h in hops)
        self.ccount = np.zeros(2 * n)
        self.ccount[self.act] = counts
        self.cint = np.zeros(2 * n)
        self.clat = np.zeros(2 * n)
        self.cj = np.zeros(2 * n, dtype=np.int64)
        self.b, self.lo, self.hi = (a.copy() for a in io._bin_and_edges(self.cj[self.act]))
        self.hist = np.zeros(len(_BINS) - 1)

    def kernel(self):
        k = compiled.LatencyKernel(self.cap, self.hop_service, np.zeros(len(self.cap) + 1), np.zeros(len(self.ops)),
                                   self.rho_max, self.iops, self.s, self.read_i, self.write_i, _BINS, _BIN_OF, _BELOW,
                                   _ABOVE, np.zeros(len(_BINS) - 1))
        k.classes(self.cint, self.clat, self.ccount, self.cj)
        k.in_use(self.act, self.ctrl, self.h0, self.h1, self.h2, self.b, self.lo, self.hi)
        k.phase(self.hist)
        return k

    def numpy_latencies(self) -> np.ndarray:
        """io.py's `_terms` and `_latencies`, written out."""
        rho = np.minimum(self.load / self.cap, self.rho_max)
        bandwidth = max(rho[self.read_i], rho[self.write_i])
        rho_ctrl = np.minimum(np.maximum(self.ops / self.iops, bandwidth), self.rho_max)
        array_term = self.s / (1.0 - rho_ctrl)
        hop_r = np.zeros(len(self.cap) + 1)
        np.divide(self.hop_service, 1.0 - rho, out=hop_r[:-1])
        lat = array_term[self.ctrl] + ((hop_r[self.h0] + hop_r[self.h1]) + hop_r[self.h2])
        self.clat[self.act] = lat
        return lat

    def numpy_settle(self, lat: np.ndarray, dt: float) -> None:
        """io.py's `_settle` and `_bins_now` (VMs running, not binned yet), written out."""
        self.cint[self.act] += lat * dt
        inside = (self.lo < lat) & (lat <= self.hi)
        out = (~inside).nonzero()[0]
        j = _BINS.searchsorted(lat[out])
        self.cj[self.act[out]] = j
        self.b[out], self.lo[out], self.hi[out] = io._bin_and_edges(j)
        self.hist += np.bincount(self.b, weights=self.ccount[self.act] * dt, minlength=len(_BINS) - 1)


def _hand():
    # three links at half load: rho 0.5 each, hop terms 0.1/0.5 = 0.2, 0.05/0.5 = 0.1, 0.2/0.5 = 0.4;
    # the array's bandwidth term the read and write links' 0.5; controller 0 at 1000 of 2000 ops
    # (0.5), controller 1 at 3000 (1.5, capped at 0.98): array terms 0.5/0.5 = 1.0 and 0.5/0.02 = 25.0
    return _State(cap=[100, 200, 50], load=[50, 100, 25], hop_service=[0.1, 0.05, 0.2], ops=[1000, 3000],
                  ctrl=[0, 1], hops=([2, 0], [-1, 1], [-1, -1]), counts=[3, 1])


@needs_compiled
def test_two_classes_by_hand_latency_integral_and_histogram():
    st = _hand()
    k = st.kernel()
    lat = np.empty(2)
    k.latencies(st.load, st.ops, lat)
    # class 0: controller 0 and link 2 only (-1: no hop): 1.0 + 0.4; class 1: controller 1, links 0 and 1
    assert lat[0] == pytest.approx(1.4, abs=1e-12) and lat[1] == pytest.approx(25.3, abs=1e-12)
    assert st.clat[0] == lat[0] and st.clat[2] == lat[1] and st.clat[1] == 0.0
    k.settle(lat, 2.0, True, False)
    assert st.cint[0] == pytest.approx(2.8) and st.cint[2] == pytest.approx(50.6)
    # 3 VMs x 2 s in 1.4 ms's bin, 1 VM x 2 s in 25.3 ms's; nothing else
    assert st.hist[_BIN_OF[_BINS.searchsorted(1.4)]] == 6.0
    assert st.hist[_BIN_OF[_BINS.searchsorted(25.3)]] == 2.0
    assert st.hist.sum() == 8.0
    assert st.cj[0] == _BINS.searchsorted(1.4) and st.lo[0] < 1.4 <= st.hi[0]


@needs_compiled
@pytest.mark.parametrize("seed", range(6))
def test_random_arrays_give_numpys_numbers_to_the_bit_over_many_rate_changes(seed):
    rng = np.random.default_rng(seed)
    n_links, n_ctrl, n = int(rng.integers(3, 40)), int(rng.integers(1, 17)), int(rng.integers(1, 400))
    cap = rng.uniform(10, 1000, n_links)
    hops = (rng.integers(0, n_links, n), rng.integers(-1, n_links, n), rng.integers(-1, n_links, n))
    args = dict(cap=cap, load=np.zeros(n_links), hop_service=rng.uniform(0.01, 0.5, n_links), ops=np.zeros(n_ctrl),
                ctrl=rng.integers(0, n_ctrl, n), hops=hops, counts=rng.integers(0, 20, n).astype(float),
                read_i=int(rng.integers(0, n_links)), write_i=int(rng.integers(0, n_links)))
    ours, ref = _State(**args), _State(**args)
    k = ours.kernel()
    for step in range(40):
        load = cap * rng.uniform(0.0, 1.2, n_links)  # (some beyond capacity: rho capped)
        if step % 7 == 3:
            load = load * (1 + rng.uniform(-1e-3, 1e-3, n_links))  # small moves: latencies stay in their bins
        ops = rng.uniform(0, 4000, n_ctrl)
        ours.load[:], ours.ops[:] = load, ops
        ref.load[:], ref.ops[:] = load, ops
        lat = np.empty(n)
        k.latencies(ours.load, ours.ops, lat)
        want = ref.numpy_latencies()
        np.testing.assert_array_equal(lat, want)
        dt = float(rng.uniform(0.001, 900))
        k.settle(lat, dt, True, False)
        ref.numpy_settle(want, dt)
        for a, b in ((ours.cint, ref.cint), (ours.clat, ref.clat), (ours.cj, ref.cj), (ours.b, ref.b),
                     (ours.lo, ref.lo), (ours.hi, ref.hi), (ours.hist, ref.hist)):
            np.testing.assert_array_equal(a, b)


@needs_compiled
def test_a_nan_latency_takes_the_bin_numpy_gives_it_and_binned_latencies_are_not_binned_again():
    st = _hand()
    k = st.kernel()
    lat = np.array([np.nan, 25.3])
    k.settle(lat, 1.0, True, False)
    assert st.cj[0] == _BINS.searchsorted(np.nan) == len(_BINS)
    before = st.b.copy()
    k.settle(np.array([1.4, 1e5]), 1.0, True, True)  # binned already: the bins stay
    np.testing.assert_array_equal(st.b, before)
    k.settle(np.array([1.4, 1e5]), 1.0, False, False)  # no VM running: integrals only
    assert st.hist.sum() == 2 * 4.0  # (the two settles with VMs running: 4 VM-seconds each)


def _run(scenario: Path, gen: str, numpy_only: bool, monkeypatch) -> str:
    monkeypatch.setenv(NUMPY_ENV, "1" if numpy_only else "0")
    sc = cluster_sim.load_scenario(scenario, ["run.backend=local", f"backup.generations={gen}", "run.workers=1"])
    g = cluster_sim.run(sc).generations[0]
    return json.dumps({"summary": g.summary.model_dump(mode="json"), "series": g.latency_series,
                       "vms": [v.model_dump(mode="json") for v in g.vms],
                       "csvs": [c.model_dump(mode="json") for c in g.csvs]}, sort_keys=True)


@needs_compiled
@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "gen"), [
    ("small-4node.yaml", "ws2008r2"),
    ("crash-during-backup.yaml", "ws2012"),
    ("drain-during-backup.yaml", "ws2012r2"),
    ("faults/storage-path-loss.yaml", "ws2016"),
    ("faults/partition.yaml", "ws2012"),
    ("800vm-incremental.yaml", "ws2016"),
])
def test_a_whole_run_compiled_gives_the_numpy_runs_results_byte_for_byte(scenario, gen, monkeypatch):
    path = ROOT / "scenarios" / scenario
    assert _run(path, gen, False, monkeypatch) == _run(path, gen, True, monkeypatch)


def test_the_numpy_switch_turns_the_compiled_loops_off(monkeypatch):
    monkeypatch.setenv(NUMPY_ENV, "1")
    assert latency_kernel() is None
    monkeypatch.setenv(NUMPY_ENV, "0")
    assert latency_kernel() is compiled


def _numpy_set_hops_many(g, k, gcls, counts, cint, gmark, gint, gtime, ccount, lat, tim, ci, now):
    """io.py's `_set_hops_many` after its checks, written out (numpy)."""
    old = gcls[g]
    moving = old != k
    g, k, old = g[moving], k[moving], old[moving]  # (one that keeps its class is left as it is)
    n = counts[g].astype(float)
    d = cint[old] - gmark[g]
    lat[ci] = np.add.accumulate(np.concatenate(([lat[ci]], n * d))).item(-1)
    tim[ci] = np.add.accumulate(np.concatenate(([tim[ci]], n * (now - gtime[g])))).item(-1)
    gint[g] += d
    gtime[g] = now
    gcls[g] = k
    gmark[g] = cint[k]
    if n.any():
        np.subtract.at(ccount, old, n)
        np.add.at(ccount, k, n)
    return bool(n.any())


@needs_compiled
def test_groups_moved_together_by_hand_bring_their_sums_up_to_date_and_change_class():
    # two groups (0 and 1) of CSV 0, in classes 0 and 1, move to classes 2 and 2 at t=10
    gcls, counts = np.array([0, 1], dtype=np.int64), np.array([3, 0], dtype=np.int64)
    cint = np.array([50.0, 20.0, 7.0])  # each class's latency integral now
    gmark, gint, gtime = np.array([10.0, 5.0]), np.array([1.0, 2.0]), np.array([4.0, 6.0])
    ccount = np.array([3.0, 0.0, 0.0])
    lat, tim = [100.0], [8.0]
    got = compiled.set_hops_many(np.array([0, 1]), np.array([2, 2]), gcls, counts, cint, gmark, gint, gtime,
                                 ccount, lat, tim, 0, 10.0)
    assert got is True  # group 0 has VMs
    assert lat == [100.0 + 3 * (50 - 10) + 0 * (20 - 5)] and tim == [8.0 + 3 * (10 - 4)]  # 220, 26
    assert gint.tolist() == [41.0, 17.0] and gtime.tolist() == [10.0, 10.0] and gmark.tolist() == [7.0, 7.0]
    assert gcls.tolist() == [2, 2] and ccount.tolist() == [0.0, 0.0, 3.0]
    # at t=11 group 0 keeps class 2 (nothing done for it, as one at a time) and group 1 (no VMs)
    # goes from class 2 to 0: its integral takes 7 - 7 (class 2's integral since its mark), its mark
    # is class 0's 50, its CSV's sums take 0 x 0 and 0 x 1
    assert compiled.set_hops_many(np.array([0, 1]), np.array([2, 0]), gcls, counts, cint, gmark, gint, gtime,
                                  ccount, lat, tim, 0, 11.0) is False  # (no VMs moved class)
    assert lat == [220.0] and tim == [26.0] and gtime.tolist() == [10.0, 11.0] and gint.tolist() == [41.0, 17.0]
    assert gcls.tolist() == [2, 0] and gmark.tolist() == [7.0, 50.0] and ccount.tolist() == [0.0, 0.0, 3.0]


@needs_compiled
@pytest.mark.parametrize("seed", range(6))
def test_groups_moved_together_compiled_give_numpys_sums_to_the_bit(seed):
    rng = np.random.default_rng(seed)
    ng, nc = int(rng.integers(8, 300)), int(rng.integers(3, 60))
    state = {"gcls": rng.integers(0, nc, ng).astype(np.int64), "counts": rng.integers(0, 4, ng).astype(np.int64),
             "cint": rng.random(nc) * 1e4, "gmark": rng.random(ng) * 1e3, "gint": rng.random(ng) * 1e5,
             "gtime": rng.random(ng) * 100.0, "ccount": rng.integers(0, 50, nc).astype(float),
             "lat": (rng.random(5) * 1e6).tolist(), "tim": (rng.random(5) * 1e3).tolist()}
    mine = {key: (v.copy() if isinstance(v, np.ndarray) else list(v)) for key, v in state.items()}
    now = 100.0
    for _ in range(40):
        g = rng.permutation(ng)[: int(rng.integers(1, ng))].astype(np.int64)
        k = (state["gcls"][g] + rng.integers(1, nc, len(g))) % nc  # (another class each)
        if rng.random() < 0.3:  # (some keep their class: left as they are)
            keep = rng.random(len(g)) < 0.3
            k[keep] = state["gcls"][g[keep]]
        ci = int(rng.integers(0, 5))
        names = ("gcls", "counts", "cint", "gmark", "gint", "gtime", "ccount", "lat", "tim")
        got = compiled.set_hops_many(g, k, *(mine[x] for x in names), ci, now)
        assert got == _numpy_set_hops_many(g, k, *(state[x] for x in names), ci, now)
        for key, v in state.items():
            assert (mine[key].tobytes() == v.tobytes()) if isinstance(v, np.ndarray) else mine[key] == v, key
        state["cint"] += rng.random(nc)
        mine["cint"][:] = state["cint"]
        now += float(rng.random() * 3.0)


@needs_compiled
@pytest.mark.parametrize("seed", range(4))
def test_the_classes_in_use_taken_compiled_are_numpys(seed):
    rng = np.random.default_rng(seed)
    ncap = 64
    st = _State([10.0, 10.0], [1.0, 1.0], [0.1, 0.1], [1.0], [0], ([0], [-1], [-1]), [1.0])
    k = st.kernel()
    ccount = np.where(rng.random(ncap) < 0.5, rng.integers(1, 9, ncap), 0).astype(float)
    cint, clat = np.zeros(ncap), np.zeros(ncap)
    cj = rng.integers(0, len(_BINS) + 1, ncap).astype(np.int64)  # (every j searchsorted gives, the ends too)
    cctrl = rng.integers(0, 4, ncap).astype(np.int64)
    chops = rng.integers(-1, 30, (3, ncap)).astype(np.int64)
    k.classes(cint, clat, ccount, cj)
    for ncls in (0, 1, 40, ncap):
        act, path, b, lo, hi = k.take_in_use(ncls, cctrl, chops)
        want = (ccount[:ncls] > 0).nonzero()[0]  # (io.py's `_on_rates`, numpy)
        assert act.tolist() == want.tolist() and act.dtype == want.dtype
        assert [p.tolist() for p in path] == [cctrl[want].tolist()] + [h[want].tolist() for h in chops]
        wb, wlo, whi = io._bin_and_edges(cj[want])
        assert b.tolist() == wb.tolist() and lo.tobytes() == wlo.tobytes() and hi.tobytes() == whi.tobytes()
