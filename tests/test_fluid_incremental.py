"""The incremental max-min solver of FluidNetwork against the full solve (max_min_fair).

Thousands of generated networks, each driven through a sequence of flow starts, stops, cap and
weight changes and ops changes (and the completions these cause) in SimPy. After every
recomputation every running flow's rate must equal the full solve's over the flows then running,
to 1e-9, and the link loads and array ops must be the sums of those rates; a flow's transferred
amount must be the integral of its rates, and a flow must end exactly when that reaches its size.
Some flows of unlimited size with a cap are steady flows (a fixed load until max-min would hold
one below its cap, then ordinary flows): they too must get max-min's rate after every change.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from cluster_sim.kernel.fluid import FluidNetwork, max_min_fair, steady

REL = 1e-9
ABS = 1e-9
NETWORKS = 2400
CHUNKS = 24


def _close(a: float, b: float, rel: float = REL, abs_: float = ABS) -> bool:
    return a == b or abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


OPS_CLASSES = 3


class Driver:
    """One generated network and its flows, with the expected state kept independently of it."""

    def __init__(self, rng: np.random.Generator, max_links: int = 8, steps: int = 40, max_starts: int = 4,
                 steady: float = 0.5):
        self.rng = rng
        self.steady = steady  # share of the flows of unlimited size with a cap that start steady
        self.steps, self.max_starts = steps, max_starts
        n_links = int(rng.integers(1, max_links + 1))
        self.links = [f"l{i}" for i in range(n_links)]
        # capacities from a few values (ties between links) or random; now and then a zero
        choice = [0.0, 5.0, 10.0, 10.0, 20.0]
        self.caps = {name: float(rng.choice(choice)) if rng.random() < 0.5 else float(rng.uniform(0.5, 50.0))
                     for name in self.links}
        self.env = simpy.Environment()
        self.net = FluidNetwork(self.env, self.caps, ops_classes=OPS_CLASSES)
        self.net.listeners.append(self.check)
        self.spec: dict[int, dict] = {}  # fid -> links, cap, weight, opm, size, flow
        self.moved: dict[int, float] = {}  # fid -> integral of its checked rates
        self.last_t = 0.0
        self.checks = 0
        # a few path templates, so that identical flows (one class) are common
        self.paths = [self._path() for _ in range(int(rng.integers(1, 6)))]
        # routes (the hops of one node's VMs on one CSV) over the first half of the links; a
        # steady flow on a route adds its own links from the other half
        self.hop_links = self.links[: max(1, n_links // 2)]
        self.own_links = self.links[len(self.hop_links):]
        self.routes: list[tuple[int, list[str]]] = []
        self.route_moves = {"steady": 0, "fell back": 0}  # moves of a route with flows on it
        for _ in range(int(rng.integers(0, 4))):
            hops = self._hops()
            self.routes.append((self.net.route(hops), hops))

    def _hops(self) -> list[str]:
        k = int(self.rng.integers(1, len(self.hop_links) + 1))
        return [str(x) for x in self.rng.choice(self.hop_links, size=k, replace=False)]

    def _path(self) -> list[str]:
        k = int(self.rng.integers(0, min(4, len(self.links)) + 1))
        return [str(x) for x in self.rng.choice(self.links, size=k, replace=False)]

    def _cap(self) -> float | None:
        u = self.rng.random()
        if u < 0.3:
            return None
        if u < 0.7:
            return float(self.rng.choice([1.0, 2.5, 4.0, 10.0]))
        if u < 0.75:
            return 0.0
        return float(self.rng.uniform(0.01, 30.0))

    def _weight(self) -> float:
        return float(self.rng.choice([1.0, 1.0, 2.0, 3.0])) if self.rng.random() < 0.8 else float(
            self.rng.uniform(0.1, 10.0))

    def start_one(self) -> None:
        rng = self.rng
        path = self.paths[int(rng.integers(len(self.paths)))] if rng.random() < 0.7 else self._path()
        cap = self._cap()
        if not path and cap is None:
            cap = float(rng.uniform(0.1, 10.0))
        size = math.inf if rng.random() < 0.25 else float(rng.choice([5.0, 10.0, 20.0])) if rng.random() < 0.5 \
            else float(rng.uniform(0.1, 60.0))
        w = self._weight()
        opm = float(rng.choice([0.0, 0.5, 2.0]))
        k = int(rng.integers(OPS_CLASSES))
        steady = size == math.inf and cap is not None and rng.random() < self.steady
        route = -1
        if steady and self.routes and rng.random() < 0.5:
            i = int(rng.integers(len(self.routes)))
            route = self.routes[i][0]
            path = [x for x in path if x in self.own_links]
        f = self.net.start(path, size_mib=size, cap_mib_s=cap, weight=w, tag=None, ops_per_mib=opm, ops_class=k,
                           steady=steady, route=route)
        self.spec[f.fid] = {"own": list(path), "route": route, "cap": cap, "w": w, "opm": opm, "k": k, "size": size,
                            "flow": f, "steady": steady,
                            "links": (self.routes[i][1] if route >= 0 else []) + list(path)}
        self.moved[f.fid] = 0.0
        f.done.callbacks.append(lambda ev, fid=f.fid: self.finished(fid, ev.value))

    def running(self) -> list[dict]:
        return [sp for sp in self.spec.values() if sp["flow"].active]

    def step(self):  # a SimPy process
        rng = self.rng
        for _ in range(int(rng.integers(3, self.steps))):
            for _ in range(int(rng.integers(0, self.max_starts))):
                self.start_one()
            live = self.running()
            if live and rng.random() < 0.3:
                self.net.stop(live[int(rng.integers(len(live)))]["flow"])
            live = self.running()
            if live and rng.random() < 0.3:
                sp = live[int(rng.integers(len(live)))]
                cap = self._cap() if sp["links"] else float(rng.uniform(0.1, 10.0))
                if cap is None and sp["flow"].steady:
                    cap = float(rng.uniform(0.1, 10.0))
                w = self._weight() if rng.random() < 0.5 else None
                self.net.set_cap(sp["flow"], cap, w)
                sp["cap"] = cap
                if w is not None:
                    sp["w"] = w
            live = self.running()
            if live and rng.random() < 0.2:
                sp = live[int(rng.integers(len(live)))]
                sp["opm"] = float(rng.choice([0.0, 1.0, 3.0]))
                if rng.random() < 0.5:
                    self.net.set_ops(sp["flow"], sp["opm"])
                else:  # with others, as a LUN's write flows are re-priced together
                    more = [o for o in live if o is not sp and rng.random() < 0.3]
                    for o in more:
                        o["opm"] = float(rng.choice([0.0, 1.0, 3.0]))
                    self.net.set_ops_many([x["flow"] for x in [sp, *more]], [x["opm"] for x in [sp, *more]])
            if rng.random() < 0.1:  # a link's capacity changes (a slowed target, a failed controller)
                link = self.links[int(rng.integers(len(self.links)))]
                self.caps[link] = float(rng.choice([5.0, 10.0, 20.0])) if rng.random() < 0.5 else float(
                    rng.uniform(0.5, 50.0))
                self.net.set_capacity(link, self.caps[link])
            live = self.running()
            if live and rng.random() < 0.2:  # a flow moves to other links (a CSV redirected), keeping its progress
                sp = live[int(rng.integers(len(live)))]
                path = self.paths[int(rng.integers(len(self.paths)))] if rng.random() < 0.5 else self._path()
                if path or sp["cap"] is not None:
                    self.net.reroute(sp["flow"], path)
                    sp["links"] = list(path)
                    sp["route"] = -1  # it no longer follows its route
            if self.routes and rng.random() < 0.15:  # a route moves (a CSV redirected or back)
                # one, or several at once (move_routes_idx: a CSV's route on every node)
                k = 1 if rng.random() < 0.5 else int(rng.integers(1, len(self.routes) + 1))
                moves = []
                for i in rng.choice(len(self.routes), size=k, replace=False):
                    r, _old = self.routes[int(i)]
                    hops = self._hops()
                    self.routes[int(i)] = (r, hops)
                    moves.append((r, hops))
                if k == 1:
                    self.net.move_route(*moves[0])
                else:
                    self.net.move_routes_idx([(r, tuple(self.net.link(h) for h in hops)) for r, hops in moves])
                for r, hops in moves:
                    on = [sp for sp in self.running() if sp["route"] == r]
                    for sp in on:
                        sp["links"] = hops + sp["own"]
                    if on:
                        self.route_moves["fell back" if self.net._steady_off else "steady"] += 1
            yield self.env.timeout(float(rng.choice([0.0, 0.5, 1.0])) if rng.random() < 0.3
                                   else float(rng.exponential(2.0)))
        for sp in self.running():  # end with the flows that would never finish
            if sp["size"] == math.inf:
                self.net.stop(sp["flow"])

    def integrate(self) -> None:
        """Add rate x time since the last check to every running flow (rates are constant between)."""
        dt = self.env.now - self.last_t
        if dt > 0:
            for sp in self.running():
                self.moved[sp["flow"].fid] += sp.get("_rate", 0.0) * dt
        self.last_t = self.env.now

    def finished(self, fid: int, ok: bool) -> None:
        sp = self.spec[fid]
        dt = self.env.now - self.last_t
        got = self.moved[fid] + (sp["_rate"] * dt if dt > 0 and "_rate" in sp else 0.0)
        f = sp["flow"]
        assert _close(f.transferred, got, 1e-7, 1e-6), (fid, f.transferred, got)
        if ok:
            assert _close(got, sp["size"], 1e-7, 1e-6), (fid, got, sp["size"])
        else:
            assert _close(f.remaining, max(0.0, sp["size"] - got), 1e-7, 1e-6)

    def check(self) -> None:
        """After a recomputation: rates equal the full solve's, loads and ops their sums."""
        self.integrate()
        self.checks += 1
        live = self.running()
        flows = {sp["flow"].fid: (sp["links"], sp["cap"]) for sp in live}
        weights = {sp["flow"].fid: sp["w"] for sp in live}
        want = max_min_fair(self.caps, flows, weights)
        load = dict.fromkeys(self.links, 0.0)
        ops = 0.0
        by_class = [0.0] * OPS_CLASSES
        for sp in live:
            f = sp["flow"]
            assert _close(f.rate, want[f.fid]), (f.fid, f.rate, want[f.fid], flows, weights, self.caps)
            sp["_rate"] = f.rate
            for link in sp["links"]:
                load[link] += want[f.fid]
            ops += want[f.fid] * sp["opm"]
            by_class[sp["k"]] += want[f.fid] * sp["opm"]
        got = self.net.link_load()
        for link in self.links:
            assert _close(got[link], load[link], 1e-9, 1e-8), (link, got[link], load[link])
        assert _close(self.net.hist_ops[-1], ops, 1e-9, 1e-8), (self.net.hist_ops[-1], ops)
        for k in range(OPS_CLASSES):  # and per ops class (an array controller)
            assert _close(float(self.net.hist_ops_class[-1][k]), by_class[k], 1e-9, 1e-8), (k, by_class)


def _drive(seed: int, steady: float = 0.5, seen: dict | None = None, **size: int) -> int:
    rng = np.random.default_rng(seed)
    d = Driver(rng, steady=steady, **size)
    d.env.process(d.step())
    d.env.run(until=100_000)
    if seen is not None:
        started = sum(1 for sp in d.spec.values() if sp["steady"])
        seen["networks with steady flows"] += started > 0
        seen["fell back"] += d.net._steady_off
        seen["steady to the end"] += started > 0 and not d.net._steady_off
        seen["route moves, steady"] += d.route_moves["steady"]
        seen["route moves, fallen back"] += d.route_moves["fell back"]
    # every flow ends (finite ones complete, the others are stopped) but those held at rate 0
    # (a zero cap, a link of zero capacity)
    assert all(sp["flow"].rate == 0.0 and sp["size"] != math.inf for sp in d.running())
    return d.checks


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_incremental_rates_equal_the_full_solve_after_every_change(chunk):
    per = NETWORKS // CHUNKS
    checks = sum(_drive(1000 * chunk + i) for i in range(per))
    assert checks > per  # every network recomputed at least once (the checks ran)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(4))
def test_incremental_rates_equal_the_full_solve_on_larger_networks(chunk):
    # up to 24 links and about 150 flows at once: components of many binding links
    checks = sum(_drive(100_000 + 1000 * chunk + i, max_links=24, steps=80, max_starts=8) for i in range(10))
    assert checks > 10


def test_steady_flows_get_the_full_solves_rates_kept_as_loads_or_fallen_back_to_classes():
    # Mostly steady flows (90 % of those of unlimited size with a cap, half of them on routes that
    # move now and then, as a CSV's redirection moves its VMs' I/O): in some networks max-min
    # keeps them all at their caps to the end (fixed loads), in others a link's level falls below
    # one's cap level or steady flows alone overload a link, and they become ordinary flows. Both
    # must give max-min's rates after every change (Driver.check); both cases must occur.
    seen = {"networks with steady flows": 0, "fell back": 0, "steady to the end": 0, "route moves, steady": 0,
            "route moves, fallen back": 0}
    for i in range(300):
        _drive(500_000 + i, steady=0.9, seen=seen)
    assert seen["networks with steady flows"] > 150
    assert seen["fell back"] > 20 and seen["steady to the end"] > 20, seen
    assert seen["route moves, steady"] > 20 and seen["route moves, fallen back"] > 20, seen


def test_a_steady_flow_is_a_fixed_load_that_moves_with_its_csv():
    # Fabric f1 = 100 and cluster NIC n = 50. A copy (uncapped) on f1 and a VM demand of 30 MiB/s
    # on f1 (steady): the copy gets 100 - 30 = 70. The demand is redirected onto n: the copy
    # gets all 100 of f1 and n carries 30. A second demand of 40 on n would take n to 70 > 50:
    # max-min holds both at 25 each (weights 1), so they become ordinary flows: 25 + 25 on n.
    env = simpy.Environment()
    net = FluidNetwork(env, {"f1": 100.0, "n": 50.0})
    copy = net.start(["f1"], 1e6)
    vm = net.start(["f1"], cap_mib_s=30.0, steady=True)
    net.settle_now()
    assert (copy.rate, vm.rate, vm.steady) == (70.0, 30.0, True)
    net.reroute(vm, ["n"])
    net.settle_now()
    assert (copy.rate, vm.rate) == (100.0, 30.0)
    assert net.link_load() == {"f1": 100.0, "n": 30.0}
    vm2 = net.start(["n"], cap_mib_s=40.0, steady=True)
    net.settle_now()
    assert (vm.rate, vm2.rate, copy.rate) == (25.0, 25.0, 100.0)
    assert not vm.steady and not vm2.steady
    env.run(until=4)
    assert vm.transferred == pytest.approx(100.0, rel=1e-12)  # 25 MiB/s for 4 s, its progress kept


def _count_batches(monkeypatch, arrays_from: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Batches of route moves in array operations from `arrays_from` routes on (steady._VECTOR_MOVES,
    and _VECTOR_MOVES_COMPILED for the compiled kernel);
    counts the batches and those of several routes done one step at a time."""
    monkeypatch.setattr(steady, "_VECTOR_MOVES", arrays_from)
    monkeypatch.setattr(steady, "_VECTOR_MOVES_COMPILED", arrays_from)
    seen = {"batches": 0, "one step at a time": 0}
    ready, loop = steady.SteadyFlows._route_moves_ready, steady.SteadyFlows._route_moves

    def counted_ready(self, batch):  # type: ignore[no-untyped-def]
        seen["batches"] += 1
        return ready(self, batch)

    def counted_loop(self, moves):  # type: ignore[no-untyped-def]
        seen["one step at a time"] += len(moves) > 1
        return loop(self, moves)

    monkeypatch.setattr(steady.SteadyFlows, "_route_moves_ready", counted_ready)
    monkeypatch.setattr(steady.SteadyFlows, "_route_moves", counted_loop)
    return seen


@pytest.mark.parametrize("arrays_from", [1, 10**9], ids=["in arrays", "one step at a time"])
def test_routes_moved_together_leave_every_link_the_same_sums_bit_for_bit_as_moved_one_at_a_time(monkeypatch,
                                                                                                 arrays_from):
    # Routes r1, r2, r4 (a VM of 0.1, 0.2 and 0.3 MiB/s) on fabrics f1, f2, f4 move together onto
    # their cluster NICs, the coordinator's NIC n3 and its fabric f3 (a CSV redirected), and back.
    # f3's sum takes 0.1, 0.2, 0.3 in that order: 0.6000000000000001 (the reverse order gives 0.6).
    # Back, the NICs and f3 are empty again: exact zeros, not drift. Redirected again, the
    # coordinator moves to node 4: n4 is left (by r4) and entered (by r1, r2) by the same moves,
    # which are then done one step at a time even where arrays are used (from 1 route on, or never).
    seen = _count_batches(monkeypatch, arrays_from)

    def build():
        env = simpy.Environment()
        net = FluidNetwork(env, {x: 100.0 for x in ("f1", "f2", "f3", "f4", "n1", "n2", "n3", "n4")})
        routes = [net.route([f"f{n}"]) for n in (1, 2, 4)]
        for cap, r in zip((0.1, 0.2, 0.3), routes, strict=True):
            net.start([], cap_mib_s=cap, steady=True, route=r)
        net.settle_now()
        return net, routes

    def sums(net):
        return (net._P.tolist(), net._capload.tolist(), net._D.tolist(), net._d_cnt.tolist(), net._d_n.tolist(),
                net._d_max.tolist(), net._d_rn.tolist(), sorted(net.changed_links), sorted(net._d_check))

    one, routes = build()
    many, _ = build()
    i = many.link
    there = [(r, (i(f"n{n}"), i("n3"), i("f3"))) for r, n in zip(routes, (1, 2, 4), strict=True)]
    back = [(r, (i(f"f{n}"),)) for r, n in zip(routes, (1, 2, 4), strict=True)]
    to_4 = [(routes[0], (i("n1"), i("n4"), i("f4"))), (routes[1], (i("n2"), i("n4"), i("f4"))),
            (routes[2], (i("f4"),))]
    for moves in (there, back, there, to_4):
        for r, hops in moves:
            one.move_route_idx(r, hops)
        many.move_routes_idx(moves)
        assert sums(many) == sums(one)  # (before the recomputation, which clears what changed)
        one.settle_now()
        many.settle_now()
        assert sums(many) == sums(one)
        load = many.link_load()
        if moves is there:
            assert load["f3"] == load["n3"] == 0.6000000000000001 != (0.3 + 0.2) + 0.1
            assert (load["f1"], load["n1"]) == (0.0, 0.1)
        elif moves is back:
            assert [load[x] for x in ("f3", "n1", "n2", "n3", "n4")] == [0.0] * 5
            assert [load[x] for x in ("f1", "f2", "f4")] == [0.1, 0.2, 0.3]
        else:  # n4: 0.3 (r4 through n3), + 0.1 + 0.2, - 0.3 (r4 direct now); f4: 0.1 + 0.2 + 0.3
            assert [load[x] for x in ("f3", "n3", "n1", "n2")] == [0.0, 0.0, 0.1, 0.2]
            assert (load["n4"], load["f4"]) == (0.3000000000000001, 0.6000000000000001)
    # of the four batches, to_4 always went one step at a time, the others in arrays if they could
    assert seen == {"batches": 4, "one step at a time": 1 if arrays_from == 1 else 4}


def _redirections(seed: int, net: FluidNetwork, together: bool) -> list:
    """A random cluster of 4-12 nodes and 1-4 CSVs on `net`: each node's VMs of a CSV are 1-3
    steady flows on the route of that node and CSV, with a few backup copies (ordinary flows) on
    the fabrics; then 40 changes, each a CSV redirected through its coordinator, back, its
    coordinator moved while redirected, or a VM's flow started or stopped. Route moves go to the
    kernel as one batch (`together`) or one route at a time. Returns the state after each change:
    every per-link sum, count and bound, then every flow's rate once allocated."""
    rng = np.random.default_rng(seed)
    nodes, csvs = int(rng.integers(4, 13)), int(rng.integers(1, 5))
    i = net.link
    fab = [i(f"f{n}") for n in range(nodes)]
    nic = [i(f"n{n}") for n in range(nodes)]
    coord = [int(rng.integers(nodes)) for _ in range(csvs)]
    redirected = [False] * csvs
    route = {(n, c): net.route_idx((fab[n],)) for n in range(nodes) for c in range(csvs)}
    flows = [net.start([], cap_mib_s=float(rng.uniform(0.1, 8.0)), steady=True, route=route[k])
             for k in route for _ in range(int(rng.integers(1, 4)))]
    flows += [net.start([f"f{int(rng.integers(nodes))}"], size_mib=float(rng.uniform(50.0, 500.0)))
              for _ in range(int(rng.integers(0, 4)))]
    states = []

    def hops(n: int, c: int) -> tuple[int, ...]:
        x = coord[c]
        return (nic[n], nic[x], fab[x]) if redirected[c] and n != x else (fab[n],)

    for _ in range(40):
        c = int(rng.integers(csvs))
        before = {n: hops(n, c) for n in range(nodes)}
        u = rng.random()
        if u < 0.7:  # redirected, or back
            redirected[c] = not redirected[c]
        elif u < 0.85:  # its coordinator moves (while redirected: NICs left and entered)
            coord[c] = int(rng.integers(nodes))
        elif u < 0.93:
            k = (int(rng.integers(nodes)), c)
            flows.append(net.start([], cap_mib_s=float(rng.uniform(0.1, 8.0)), steady=True, route=route[k]))
        else:
            live = [f for f in flows if f.active]
            if live:
                net.stop(live[int(rng.integers(len(live)))])
        moves = [(route[(n, c)], hops(n, c)) for n in range(nodes) if hops(n, c) != before[n]]
        if together:
            net.move_routes_idx(moves)
        else:
            for r, h in moves:
                net.move_route_idx(r, h)
        states.append((net._P.tolist(), net._capload.tolist(), net._D.tolist(), net._d_cnt.tolist(),
                       net._d_n.tolist(), net._d_max.tolist(), net._d_rn.tolist(), sorted(net.changed_links),
                       sorted(net._d_check), sorted(net._seeds)))
        dt = float(rng.choice([0.0, 0.5, 2.0]))
        if dt:
            net.env.run(until=net.env.now + dt)
        else:
            net.settle_now()
        states.append([f.rate for f in flows])
    return states


@pytest.mark.parametrize("numpy_only", [False, True], ids=["compiled sums", "numpy sums"])
def test_redirections_moved_in_arrays_leave_the_same_sums_and_rates_bit_for_bit_as_one_route_at_a_time(
        monkeypatch, numpy_only):
    # 80 random clusters (_redirections), each twice: route moves as one batch, in arrays from 2
    # routes on, or one route at a time. The same state after every change, to the last bit; most
    # batches went in arrays, a coordinator moved while redirected one step at a time. A batch's
    # sums are applied by kernel/fluid/_routes.pyx where it is built, else (and with the switch) by
    # numpy's np.add.at calls.
    from cluster_sim.kernel.compiled import NUMPY_ENV, compiled

    monkeypatch.setenv(NUMPY_ENV, "1" if numpy_only else "0")
    built = compiled("cluster_sim.kernel.fluid._routes") is not None
    assert (FluidNetwork(simpy.Environment(), {"x": 1.0})._routes_c is not None) == (built and not numpy_only)
    seen = _count_batches(monkeypatch, 2)

    def network(seed: int) -> FluidNetwork:
        rng = np.random.default_rng(seed + 1)
        links = {f"{kind}{n}": float(rng.uniform(20.0, 200.0)) for kind in "fn" for n in range(12)}
        return FluidNetwork(simpy.Environment(), links)

    for seed in range(80):
        assert _redirections(seed, network(seed), True) == _redirections(seed, network(seed), False), seed
    assert seen["batches"] > 500 and seen["one step at a time"] > 30, seen  # (637 and 70)
    assert seen["batches"] - seen["one step at a time"] > 0.6 * seen["batches"], seen


def test_steady_flows_repriced_together_in_numpy_add_their_ops_as_one_by_one_and_a_stale_handle_refuses():
    # Three VM write flows of 0.1, 0.2 and 0.3 MiB/s at 1 op per MiB: 0.1 + 0.2 + 0.3 =
    # 0.6000000000000001 ops/s. Re-priced to 3 ops per MiB (a snapshot's copy-on-write) the sum
    # adds 0.1 x 2, 0.2 x 2, 0.3 x 2 in that order: 1.8000000000000003 (3 x 0.6 would be 1.8).
    def build():
        env = simpy.Environment()
        net = FluidNetwork(env, {"w": 100.0}, ops_classes=2)
        flows = [net.start(["w"], cap_mib_s=c, steady=True, ops_per_mib=1.0) for c in (0.1, 0.2, 0.3)]
        net.settle_now()
        return net, flows

    one, f1 = build()
    many, f2 = build()
    assert many.hist_ops[-1] == 0.6000000000000001
    one.set_ops_many(f1, [3.0, 3.0, 3.0])
    batch = many.steady_ops(f2)
    assert batch is not None and many.set_steady_ops(batch, np.array([3.0, 3.0, 3.0]))
    one.settle_now()
    many.settle_now()
    assert many._ops_base.tolist() == one._ops_base.tolist() == [1.8000000000000003, 0.0]
    assert many.hist_ops[-1] == 1.8000000000000003 and many._opm[f2[1].slot] == 3.0
    many.stop(f2[0])  # a flow ended: the handle no longer holds, nothing changes
    assert not many.set_steady_ops(batch, np.array([1.0, 1.0, 1.0]))
    assert many._opm[f2[1].slot] == 3.0
    other = many.start(["w"], cap_mib_s=0.4, steady=True, ops_per_mib=1.0, ops_class=1)
    assert many.steady_ops([f2[1], other]) is None  # two ops classes: one by one


def test_a_class_of_identical_flows_finishes_each_member_at_its_own_size():
    # Link 12, three identical flows (one class) of 6, 12 and 24 MiB: 4 MiB/s each until the
    # first ends at 1.5 s, then 6 each: the second (6 left) at 2.5 s; the third alone at 12:
    # 24 - 6 - 6 = 12 left at 2.5 s -> 3.5 s.
    env = simpy.Environment()
    net = FluidNetwork(env, {"a": 12.0})
    fs = [net.start(["a"], size) for size in (6.0, 12.0, 24.0)]
    ends = {}
    for i, f in enumerate(fs):
        f.done.callbacks.append(lambda _e, i=i: ends.__setitem__(i, env.now))
    env.run()
    assert ends[0] == pytest.approx(1.5, rel=1e-12)
    assert ends[1] == pytest.approx(2.5, rel=1e-12)
    assert ends[2] == pytest.approx(3.5, rel=1e-12)
    assert all(f.transferred == pytest.approx(f.size, rel=1e-12) for f in fs)


def test_a_change_on_an_unsaturated_link_re_solves_nothing_else():
    # Backup target t = 10 shared by 4 uncapped copies (2.5 each, t binding); a VM flow capped
    # at 1 on the fabric link f (capacity 100, not saturated) starts and stops: no region is
    # re-solved (the sums alone show that t and the copies are as they were).
    env = simpy.Environment()
    net = FluidNetwork(env, {"t": 10.0, "f": 100.0})
    copies = [net.start(["t", "f"] if i == 0 else ["t"], 1e6) for i in range(4)]
    net.settle_now()
    solved, fast = net.resolved, net.fast
    vm = net.start(["f"], cap_mib_s=1.0)
    net.settle_now()
    assert vm.rate == 1.0
    assert [c.rate for c in copies] == [2.5] * 4
    net.stop(vm)
    net.settle_now()
    assert (net.resolved, net.fast) == (solved, fast + 1)  # the start by sums; the stop needs nothing
    assert net.link_load()["f"] == pytest.approx(2.5, rel=1e-12)


def test_a_copy_ending_raises_the_level_of_the_others_by_the_sums_alone():
    # t = 12 with copies of 3 nodes (fabrics f1..f3 = 100), two per node: 6 copies at 2 each.
    # One copy of node 1 ends at 10 MiB (t = 5 s): 5 left share 12, 2.4 each, with no region
    # re-solved. The node-2 copies of 100 MiB have 90 left at 5 s: they end at 5 + 90 / 2.4 s.
    env = simpy.Environment()
    net = FluidNetwork(env, {"t": 12.0, "f1": 100.0, "f2": 100.0, "f3": 100.0})
    short = net.start(["t", "f1"], 10.0)
    others = [net.start(["t", "f1"], 1e6)] + [net.start(["t", f"f{k}"], 100.0 if k == 2 else 1e6)
                                             for k in (2, 3) for _ in range(2)]
    env.run(until=1)
    assert [f.rate for f in [short, *others]] == [pytest.approx(2.0, rel=1e-12)] * 6
    solved = net.resolved
    env.run(until=6)
    assert short.done.value is True and env.now == 6
    assert [f.rate for f in others] == [pytest.approx(2.4, rel=1e-12)] * 5
    assert net.resolved == solved  # the level moved; no class was re-solved
    env.run(until=others[1].done)
    assert env.now == pytest.approx(5 + 90 / 2.4, rel=1e-12)


def test_link_loads_with_one_binding_link_are_its_level_times_each_links_weight_as_the_full_product():
    # Backup target t = 12 binds 3 uncapped copies (4 each): one on fabric f1, two on f2 (fabrics
    # of 100, not binding); with one binding link the loads are t's level times each link's weight
    # of t-frozen flows: t 12, f1 4, f2 8. A second binding link (f1 cut to 2: that copy gets 2, the
    # two others 5 each) takes the general product; both ways equal the product over the binding
    # links to the last bit.
    env = simpy.Environment()
    net = FluidNetwork(env, {"t": 12.0, "f1": 100.0, "f2": 100.0})
    net.start(["t", "f1"], 1e6)
    net.start(["t", "f2"], 1e6)
    net.start(["t", "f2"], 1e6)
    net.settle_now()

    def full_product() -> list[float]:
        return (net._P + net._C[:, net._bidx] @ net._lam[net._bidx]).tolist()

    assert len(net._bidx) == 1
    assert net.link_load() == {"t": 12.0, "f1": 4.0, "f2": 8.0}
    assert net._loads().tolist() == full_product()
    net.set_capacity("f1", 2.0)
    net.settle_now()
    assert len(net._bidx) == 2
    assert net.link_load() == {"t": 12.0, "f1": 2.0, "f2": 10.0}
    assert net._loads().tolist() == full_product()


def test_a_batch_of_route_moves_made_ready_lists_each_step_in_order_and_leaves_out_routes_already_there() -> None:
    # 9 routes on links 10..18 each, every one moving to its own link 20+i and the shared links 30
    # and 31 (a CSV redirected: each node's fabric left, its NIC and the coordinator's entered);
    # route 3 is there already (left out). 8 routes move: from _VECTOR_MOVES (8) in arrays. The
    # steps, route after route: its old link (-1), then its 3 new ones (+1); links 30 and 31 last
    # entered by the 8th route (steps 30 and 31), each route's own links at their only step.
    from cluster_sim.kernel.fluid.steady import _VECTOR_MOVES, RouteMoves

    assert _VECTOR_MOVES == 8
    r_hops = [(10 + i,) for i in range(9)]
    r_hops[3] = (23, 30, 31)
    batch = RouteMoves([(i, (20 + i, 30, 31)) for i in range(9)])
    batch.ready(r_hops)
    live = [0, 1, 2, 4, 5, 6, 7, 8]
    assert batch.arrays and batch.routes == live and batch.expect == tuple(r_hops)
    assert batch.news == [(20 + i, 30, 31) for i in live]
    assert batch.idx.tolist() == [x for i in live for x in (10 + i, 20 + i, 30, 31)]
    assert batch.step.tolist() == [k for k in range(8) for _ in range(4)]
    assert batch.isign.tolist() == [-1, 1, 1, 1] * 8
    assert batch.new_idx.tolist() == [x for i in live for x in (20 + i, 30, 31)]
    assert batch.new_route.tolist() == [k for k in range(8) for _ in range(3)]
    assert batch.links_list == [10, 11, 12, 14, 15, 16, 17, 18, 20, 21, 22, 24, 25, 26, 27, 28, 30, 31]
    assert batch.last.tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29, 30, 31]

    # a link both left and entered (route 0 goes through route 1's old link): one move at a time
    crossing = RouteMoves([(i, (11,) if i == 0 else (20 + i, 30, 31)) for i in range(9)])
    crossing.ready([(10 + i,) for i in range(9)])
    assert not crossing.arrays and crossing.routes == list(range(9))
    # 7 routes to move: fewer than _VECTOR_MOVES, one at a time
    few = RouteMoves([(i, (20 + i, 30, 31)) for i in range(7)])
    few.ready([(10 + i,) for i in range(9)])
    assert not few.arrays and few.routes == list(range(7))


def _ready_both(moves, r_hops, n_links, min_moves=8):
    """A batch made ready by numpy's code and by the compiled module, both in arrays from min_moves
    routes on; the latter's steps as lists."""
    from cluster_sim.kernel.compiled import compiled
    from cluster_sim.kernel.fluid.steady import RouteMoves

    module = compiled("cluster_sim.kernel.fluid._routes")
    if module is None:
        pytest.skip("kernel/fluid/_routes.pyx not built")
    a, b = RouteMoves(list(moves)), RouteMoves(list(moves))
    a.ready(list(r_hops), min_moves=min_moves)
    b.ready(list(r_hops), module, n_links, min_moves=min_moves)
    return a, b


def test_a_csv_redirected_on_8_nodes_moves_its_7_routes_in_arrays_compiled_and_one_step_at_a_time_in_numpy():
    # 800vm-8node: a CSV redirected moves the route of each of the 7 nodes that do not own it to
    # its node's NIC and the coordinator's (links 20+i, 30, 31). The compiled kernel takes such a
    # batch in arrays from one route on (_VECTOR_MOVES_COMPILED: 5 us against 70 us one step at a
    # time, measured); numpy's arrays gain nothing below 8 routes (_VECTOR_MOVES), so numpy's code
    # moves them one at a time. The same steps either way where both take arrays (test below).
    from cluster_sim.kernel.compiled import compiled
    from cluster_sim.kernel.fluid.steady import _VECTOR_MOVES, _VECTOR_MOVES_COMPILED, RouteMoves

    assert (_VECTOR_MOVES, _VECTOR_MOVES_COMPILED) == (8, 1)
    module = compiled("cluster_sim.kernel.fluid._routes")
    if module is None:
        pytest.skip("kernel/fluid/_routes.pyx not built")
    moves = [(i, (20 + i, 30, 31)) for i in range(7)]
    r_hops = [(10 + i,) for i in range(7)]
    in_numpy, in_kernel, one = RouteMoves(list(moves)), RouteMoves(list(moves)), RouteMoves([moves[0]])
    in_numpy.ready(list(r_hops))
    in_kernel.ready(list(r_hops), module, 40)
    one.ready(list(r_hops), module, 40)
    assert not in_numpy.arrays and in_numpy.steps_c is None
    assert in_kernel.arrays and in_kernel.routes == list(range(7)) and in_kernel.steps_c is not None
    assert in_kernel.links_list == [*range(10, 17), *range(20, 27), 30, 31]
    assert one.arrays and one.links_list == [10, 20, 30, 31]


def _same_ready(a, b) -> None:
    assert (b.routes, b.news, b.arrays, b.expect) == (a.routes, a.news, a.arrays, a.expect)
    if not a.arrays:
        assert b.steps_c is None
        return
    s = b.steps_c.lists()
    assert b.links_list == a.links_list and s["routes"] == a.routes and s["news"] == a.news
    for name in ("idx", "step", "isign", "links", "last", "new_idx", "new_route"):
        assert s[name] == getattr(a, name).tolist(), name


def test_a_batch_made_ready_compiled_has_numpys_steps_by_hand_and_on_random_batches() -> None:
    r_hops = [(10 + i,) for i in range(9)]
    r_hops[3] = (23, 30, 31)
    _same_ready(*_ready_both([(i, (20 + i, 30, 31)) for i in range(9)], r_hops, 40))  # (the case above)
    _same_ready(*_ready_both([(i, (11,) if i == 0 else (20 + i, 30, 31)) for i in range(9)],
                             [(10 + i,) for i in range(9)], 40))  # a link left and entered
    _same_ready(*_ready_both([(i, (20 + i, 30, 31)) for i in range(7)], [(10 + i,) for i in range(9)], 40))  # few
    rng = np.random.default_rng(7)
    arrays = 0
    for _ in range(300):
        n_links, n_routes = int(rng.integers(4, 60)), int(rng.integers(1, 40))
        def hops(n: int) -> tuple[int, ...]:
            return tuple(int(x) for x in rng.choice(n, int(rng.integers(0, 4)), replace=False))
        r_hops = [hops(n_links) for _ in range(n_routes)]
        moves = [(int(rng.integers(0, n_routes)), hops(n_links)) for _ in range(int(rng.integers(1, 30)))]
        if rng.random() < 0.5:  # (often distinct routes, each to links of its own: in arrays)
            moves = [(r, tuple(n_links + 3 * r + j for j in range(int(rng.integers(1, 4)))))
                     for r in rng.permutation(n_routes)[: len(moves)].tolist()]
            n_links += 3 * n_routes + 3
        if rng.random() < 0.2:
            r, _ = moves[0]
            moves[0] = (r, r_hops[r])  # (one already there)
        a, b = _ready_both(moves, r_hops, n_links, min_moves=int(rng.choice([1, 8])))
        _same_ready(a, b)
        arrays += a.arrays
    assert arrays > 50  # (both kinds of batch seen)
    from cluster_sim.kernel.fluid import _routes  # (a link out of the network's range fails, never read past)

    for bad in (40, -1):
        with pytest.raises(IndexError, match=f"link {bad} is not one of the network's 40"):
            _routes.ready([(i, (20 + i, bad)) for i in range(9)], tuple((10 + i,) for i in range(9)), 40, 8)


def test_the_same_route_moves_asked_again_are_one_batch_made_ready_once_unless_the_routes_are_elsewhere() -> None:
    # A CSV's plans are made again after a group had no VM for a while (a VM saved for its
    # backup); the same moves give the same batch, made ready once. 8 routes of 1 MiB/s on f0..f7
    # move to (n_i, n8, f8) (redirected through node 8) and back, three times: 2 batches, each made
    # ready at its first use. From elsewhere (the routes on g0..g7 first), the moves to node 8 are
    # a new batch made ready there, applied in arrays (not one step at a time): f8 carries 8 MiB/s.
    env = simpy.Environment()
    net = FluidNetwork(env, {f"{k}{n}": 100.0 for k in "fgn" for n in range(9)})
    i = net.link
    routes = [net.route([f"f{n}"]) for n in range(8)]
    for r in routes:
        net.start([], cap_mib_s=1.0, steady=True, route=r)
    net.settle_now()
    to_8 = [(r, (i(f"n{n}"), i("n8"), i("f8"))) for n, r in enumerate(routes)]
    back = [(r, (i(f"f{n}"),)) for n, r in enumerate(routes)]
    batches = []
    for _ in range(3):
        for moves in (to_8, back):
            b = net.route_moves(list(moves))
            net.move_routes(b)
            net.settle_now()
            batches.append(b)
    assert batches[0] is batches[2] is batches[4] and batches[1] is batches[3] is batches[5]
    assert batches[0] is not batches[1] and len(net._batches) == 2 and batches[0].arrays
    assert (net.link_load()["f8"], net.link_load()["f0"]) == (0.0, 1.0)  # (back where they started)
    net.move_routes(net.route_moves([(r, (i(f"g{n}"),)) for n, r in enumerate(routes)]))
    net.settle_now()
    again = net.route_moves(list(to_8))  # (from g0..g7: not where batches[0] was made ready)
    assert again is not batches[0] and again.expect is None
    net.move_routes(again)
    net.settle_now()
    assert again.arrays and again.expect == tuple((i(f"g{n}"),) for n in range(8))
    assert (net.link_load()["f8"], net.link_load()["n8"], net.link_load()["g0"]) == (8.0, 8.0, 0.0)
