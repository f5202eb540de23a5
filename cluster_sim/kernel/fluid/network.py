"""`FluidNetwork`: links and flows in a SimPy environment (the flow API, its state, one
recomputation per instant, the utilisation history) and `Flow`, a handle on one flow. The
bookkeeping, the allocation and the completions are mixins in classes.py, allocation.py and
completions.py."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

from cluster_sim.kernel.compiled import compiled
from cluster_sim.kernel.fluid.allocation import Allocation
from cluster_sim.kernel.fluid.classes import FlowClasses
from cluster_sim.kernel.fluid.completions import Completions
from cluster_sim.kernel.fluid.steady import RouteMoves, SteadyFlows, SteadyOps
from cluster_sim.kernel.instant import FLUID, InstantHooks

HISTORY = 1024  # recomputations kept in FluidNetwork.hist_* (listeners read the last one)
ROUTE_BATCHES_KEPT = 512  # [P] batches of route moves kept for reuse (about 23 KiB each at 64 nodes; ws2008r2 makes new ones all over)


class Flow:
    """A handle on one flow. While it runs, its numbers live in the network (see FluidNetwork)."""

    __slots__ = ("fid", "slot", "net", "size", "tag", "done", "started_s", "active", "_final", "_cap")

    def __init__(self, fid: int, slot: int, net: FluidNetwork, size: float, tag: Any, done: simpy.Event,
                 started_s: float, cap: float = math.inf):
        self.fid = fid
        self.slot = slot
        self.net = net
        self.size = size
        self.tag = tag
        self.done = done
        self.started_s = started_s
        self.active = True
        self._final = (0.0, size)  # (transferred, remaining) once ended
        self._cap = cap

    @property
    def rate(self) -> float:
        return self.net._member_rate(self.slot) if self.active else 0.0

    @property
    def transferred(self) -> float:
        return self.net._progress(self.slot)[0] if self.active else self._final[0]

    @property
    def remaining(self) -> float:
        return self.net._progress(self.slot)[1] if self.active else self._final[1]

    @property
    def cap(self) -> float:
        return self.net._flow_cap(self.slot) if self.active else self._cap

    @property
    def steady(self) -> bool:
        """Kept as a fixed load on its links (see steady.py); False once it is an ordinary flow."""
        return self.active and self.slot in self.net._steady


class FluidNetwork(FlowClasses, Allocation, Completions, SteadyFlows):
    """Links and flows in a SimPy environment, with a recorded utilisation history.

    Classes. Identical flows (same links, cap and weight) get identical max-min rates, so they
    are solved as one class: a weighted flow of weight n x w and cap n x cap. A class's clock is
    the transfer per member since the class was created; a member's progress is the clock's
    advance since it joined, and members wait in a heap by the clock reading at which they end.

    States. A class is at its cap, or frozen by a binding link b (a link that saturated in the
    filling and froze it): then its rate per member is w x L(b), L(b) the link's water level.
    Each binding link keeps a virtual clock V(b), the integral of its level, so a class frozen by
    b advances w x dV(b) and a change of L(b) costs nothing per class; classes frozen by b wait
    in a heap by the V(b) reading at which their next member ends.

    Sums. Per link l: P[l], the caps of the capped classes on l (n x cap each), and C[l, b], the
    weights (n x w) of the classes on l frozen by b. The load of l is P[l] + sum_b C[l, b] L(b),
    and a binding link b is saturated: capacity(b) = P[b] + sum_b' C[b, b'] L(b').

    A recomputation (`_allocate`) first tries to keep every class's state: it recounts the
    classes that changed, solves those saturation equations again for the levels they touch, and
    keeps the result if it is still the max-min allocation: every class frozen by b has a cap
    level >= L(b), every capped class on b one <= L(b), no class crosses a binding link with a
    lower level than the one that froze it, and no other link is loaded beyond its capacity (the
    bottleneck characterisation of max-min fairness). Otherwise it re-solves the region of
    binding links the change touches (`_solve`).

    Steady flows (`start(..., steady=True)`: unlimited size, a finite cap the caller expects to
    be met, such as a VM's steady I/O) are a fixed load on their links, not members of a class:
    starting, stopping or moving one costs O(its links). If max-min would ever hold one below its
    cap, they all become ordinary flows from then on (steady.py), so rates stay max-min's.

    Listeners (`listeners`, called after every recomputation) read the state through
    `hist_load[-1]` (link loads, array (L,)), `hist_ops[-1]` (array back-end ops/s) and
    `changed_links` (the links whose load may have changed in that recomputation). The
    `hist_*` deques keep the last `history` recomputations (HISTORY by default, None: all).
    """


    def __init__(self, env: simpy.Environment, capacities: dict[str, float], hooks: InstantHooks | None = None,
                 history: int | None = HISTORY, ops_classes: int = 1):
        self.env = env
        self.ops_classes = max(1, int(ops_classes))  # back-end I/O ops are summed per class (array controller)
        self.hooks = hooks or InstantHooks(env)
        self.link_names = list(capacities)
        self.lidx = {n: i for i, n in enumerate(self.link_names)}
        self.capacity = np.array([capacities[n] for n in self.link_names], dtype=float)
        n_links = len(self.link_names)
        size = 64
        self._free: list[int] = list(range(size - 1, -1, -1))
        # per slot (one flow): its class, ops per MiB, and at the time it joined the class: the
        # class clock, what it had transferred and what it had left
        self._cls: list[int] = [-1] * size
        self._opm: list[float] = [0.0] * size
        self._k: list[int] = [0] * size  # ops class
        self._v0: list[float] = [0.0] * size
        self._moved0: list[float] = [0.0] * size
        self._left0: list[float] = [0.0] * size
        self._tok: list[int] = [0] * size  # counts its joins: heap entries of an earlier one are void
        self._stok: list[int] = [0] * size  # counts its steady adds and removes (a SteadyOps handle holds while they are as it saw them)
        self._fresh: set[int] = set()  # joined its class in this instant: rate 0 until allocated
        # per class
        self._ckey: dict[tuple[tuple[int, ...], float, float, int], int] = {}
        self._cfree: list[int] = []
        self._c_links: list[tuple[int, ...]] = []
        self._c_cap: list[float] = []  # per member
        self._c_w: list[float] = []
        self._c_k: list[int] = []  # ops class of every member (a class is homogeneous in it)
        self._c_level: list[float] = []  # cap / weight
        self._c_acap: list[float] = []  # n x cap, n x weight: the class as one weighted flow
        self._c_aw: list[float] = []
        self._c_members: list[set[int]] = []
        self._c_state: list[int] = []
        self._c_n: list[int] = []  # members counted in the sums
        self._c_opm: list[float] = []  # ops per MiB summed over members: now, and counted
        self._c_opmc: list[float] = []
        self._c_clock0: list[float] = []  # the clock when the state was set, and the time (capped)
        self._c_ref: list[float] = []  # or the V(b) reading (frozen by b) then
        self._c_heap: list[list[tuple[float, int, int]]] = []  # (clock when it ends, slot, token)
        self._c_ver: list[int] = []  # heap entries of older versions are void
        # per link
        self._on_link: list[set[int]] = [set() for _ in range(n_links)]
        self._capload = np.zeros(n_links)  # members' finite caps (re-summed near capacity)
        self._uncapped: list[int] = [0] * n_links
        self._pcapacity: list[float] = self.capacity.tolist()
        self._binding: list[bool] = [False] * n_links
        self._bind_np = np.zeros(n_links, dtype=bool)
        self._blist: list[int] = []  # the binding links, ascending (their levels are the only nonzero ones)
        self._bidx = np.zeros(0, dtype=int)
        self._cap_tol = self.capacity * (1 + 1e-12)
        self._sorted: list[list[int] | None] = [None] * n_links  # its classes by cap level, if known
        self._plam: list[float] = [0.0] * n_links  # water level (binding links)
        self._lam = np.zeros(n_links)
        self._V: list[float] = [0.0] * n_links
        self._Vt: list[float] = [0.0] * n_links
        self._P = np.zeros(n_links)
        self._C = np.zeros((n_links, n_links))
        # ops/s of capped classes, and per MiB/s of level of each link's frozen ones, per ops class
        self._ops_base = np.zeros(self.ops_classes)
        self._opc = np.zeros((n_links, self.ops_classes))
        self._H: list[list[tuple[float, int, int]]] = [[] for _ in range(n_links)]  # (V(b) at next end, class, ver)
        self._lver: list[int] = [0] * n_links
        self._minf: list[float | None] = [None] * n_links  # lowest cap level frozen by it, if known
        self._maxc: list[float | None] = [None] * n_links  # highest cap level of its capped classes
        self._fast_n: list[int] = [0] * n_links
        self._nfrozen: list[int] = [0] * n_links  # classes it holds (its column of C is 0 without)
        # changes waiting for this instant's recomputation
        self._touched: set[int] = set()  # classes that gained or lost members
        self._seeds: set[int] = set()  # binding links that lost a class
        self._opm_changed: set[int] = set()
        self._force_solve = False  # a link's capacity changed: solve its region, not by the sums
        self._heap: list[tuple[float, int, int, int]] = []  # (time, 0 class | 1 link, index, version)
        self.flows: dict[int, Flow] = {}  # slot -> flow
        self._next_id = 0
        self._dirty = False
        self._timer_gen = 0
        self.recomputes = 0
        self.resolved = 0  # classes re-solved by region solves, summed (for benchmarks and tests)
        self.fast = 0  # recomputations done by the sums alone
        self.changed_links: set[int] = set()
        # history of piecewise-constant state: (time, link loads (L,), array back-end ops/s), the
        # last `history` recomputations (None: all; a list of every one grows as links x changes)
        self.hist_t: deque[float] = deque(maxlen=history)
        self.hist_load: deque[np.ndarray] = deque(maxlen=history)
        self.hist_ops: deque[float] = deque(maxlen=history)
        self.hist_ops_class: deque[np.ndarray] = deque(maxlen=history)  # ops/s per ops class
        self.listeners: list[Callable[[], None]] = []  # called after every recomputation
        # the sums at a rate change compiled (kernel/fluid/_sums.pyx), or None: numpy's expressions
        sums = self._sums_module = compiled("cluster_sim.kernel.fluid._sums")
        self._sums_c = None if sums is None else sums.LinkSums(self._P, self._C, self._cap_tol,
                                                              self._bind_np.view(np.uint8), self._ops_base, self._opc)
        self._steady_init(n_links)
        self._batches: dict[tuple[tuple[int, tuple[int, ...]], ...], RouteMoves] = {}  # (route_moves)
        self._record()

    # ---- public API -----------------------------------------------------------------------
    def link(self, name: str) -> int:
        return self.lidx[name]

    def start(
        self,
        links: list[str] | tuple[str, ...],
        size_mib: float = math.inf,
        cap_mib_s: float | None = None,
        weight: float = 1.0,
        tag: Any = None,
        ops_per_mib: float = 0.0,
        ops_class: int = 0,
        steady: bool = False,
        route: int = -1,
    ) -> Flow:
        """A flow over `links`. `steady`: it never ends by itself and runs at its cap, so it is kept
        as a fixed load (see the class docstring); it needs a finite cap and unlimited size. `route`
        (a steady flow's; from `route()`): it also crosses the route's links, wherever they are."""
        if size_mib < 0:
            raise ValueError("flow size must be >= 0")
        if weight <= 0:
            raise ValueError("flow weight must be > 0")
        link_idx = tuple(self.lidx[n] for n in links)  # KeyError for an unknown link, before any change
        cap = math.inf if cap_mib_s is None else float(cap_mib_s)
        if cap < 0:
            raise ValueError("flow cap must be >= 0")
        if not link_idx and not math.isfinite(cap):
            raise ValueError("a flow with no links must have a rate cap")
        if steady and (size_mib != math.inf or not math.isfinite(cap)):
            raise ValueError("a steady flow has unlimited size and a finite cap")
        if route >= 0 and not steady:
            raise ValueError("only a steady flow runs on a route")
        own = link_idx
        fid = self._next_id
        self._next_id += 1
        now = self.env.now
        if size_mib <= 0:
            f = Flow(fid, -1, self, 0.0, tag, self.env.event(), now, cap)
            f.active = False
            f.done.succeed(True)
            return f
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._opm[slot] = float(ops_per_mib)
        self._k[slot] = int(ops_class)
        if steady and not self._steady_off:
            self._steady_add(slot, link_idx, cap, float(weight), 0.0, route)
        else:
            if route >= 0:
                link_idx = self._r_hops[route] + own
                self._on_route(slot, route, own)
            self._join(slot, link_idx, cap, float(weight), 0.0, float(size_mib))
        f = Flow(fid, slot, self, float(size_mib), tag, self.env.event(), now, cap)
        self.flows[slot] = f
        self._mark()
        return f

    def stop(self, flow: Flow) -> None:
        """End a flow early (a crash, a steady demand that changes); `done` fires with False."""
        if not flow.active:
            return
        self._end(flow, False)
        self._mark()

    def stop_flows_on(self, links: list[str]) -> list[Flow]:
        """Stop every flow crossing any of these links (a host died); returns them."""
        slots: set[int] = set()
        for name in links:
            if name in self.lidx:
                li = self.lidx[name]
                for c in self._on_link[li]:
                    slots |= self._c_members[c]
                slots |= self._steady_slots_on(li)
        flows = [self.flows[s] for s in sorted(slots)]
        for f in flows:
            self.stop(f)
        return flows

    def route(self, links: list[str] | tuple[str, ...]) -> int:
        """A route over these links for steady flows (`start(..., steady=True, route=r)`), which
        `move_route` moves with all its flows at once."""
        return self._route_new(tuple(self.lidx[n] for n in links))

    def route_idx(self, hops: tuple[int, ...]) -> int:
        """`route` by link indices."""
        return self._route_new(hops)

    def move_route(self, r: int, links: list[str] | tuple[str, ...]) -> None:
        self.move_route_idx(r, tuple(self.lidx[n] for n in links))

    def move_route_idx(self, r: int, hops: tuple[int, ...]) -> None:
        """Move route r onto other links (by index): every flow on it moves, keeping its progress
        (once steady flows are ordinary flows, each is rerouted)."""
        if self._r_hops[r] == hops:
            return
        if self._steady_off:  # its flows are ordinary flows now: each moves
            self._set_route_hops(r, hops)
            for s in sorted(self._r_plain[r]):
                self._move_class_member(s, hops + self._plain_route[s][1])
            if self._r_plain[r]:
                self._mark()
            return
        if self._route_move(r, hops):
            self._mark()

    def move_routes_idx(self, moves: list[tuple[int, tuple[int, ...]]]) -> None:
        """`move_route_idx` for each (route, hops), in order (a CSV redirected or back moves the
        route of every node at once)."""
        self.move_routes(self.route_moves(moves))

    def route_moves(self, moves: list[tuple[int, tuple[int, ...]]]) -> RouteMoves:
        """These moves, (route, hops) in order, made ready to be applied (`move_routes`) as often
        as the routes are where they are now (a CSV redirected and back, snapshot after snapshot).
        The same moves asked again give the same batch, made ready once: a CSV's plans are made
        again after one of its groups had no VM for a while (a VM saved for its backup), with the
        same moves (a ws2012 run of 3,200 VMs asked 1,803 times for 64 different batches; making
        one ready costs about as much as applying it). A batch checks where its routes are at each
        use, so sharing one changes nothing; one made ready from elsewhere (the same moves from
        another coordinator) is made anew, not applied one step at a time."""
        key = tuple(moves)
        batch = self._batches.get(key)
        if batch is None or (batch.expect is not None and batch.where(self._r_hops) != batch.expect):
            if len(self._batches) >= ROUTE_BATCHES_KEPT:
                self._batches.clear()
            batch = self._batches[key] = RouteMoves(moves)
        return batch

    def move_routes(self, batch: RouteMoves) -> None:
        """`move_routes_idx` of a batch made ready by `route_moves` (from wherever the routes are:
        where they were then, in array operations)."""
        if self._steady_off:
            for r, hops in batch.moves:
                self.move_route_idx(r, hops)
            return
        if self._route_moves_ready(batch):
            self._mark()

    def touch(self) -> None:
        """Recompute at the end of this instant even if nothing changed (as a change would)."""
        self._mark()

    def reroute(self, flow: Flow, links: list[str] | tuple[str, ...]) -> None:
        """Move a live flow onto other links; its size, progress, cap, weight and ops stay."""
        if flow.active:
            self.reroute_idx(flow, tuple(self.lidx[n] for n in links))

    def reroute_idx(self, flow: Flow, link_idx: tuple[int, ...]) -> None:
        """`reroute` by link indices (`link(name)`)."""
        if not flow.active:
            return
        s = flow.slot
        if s in self._steady:
            moved = self._steady_progress(s)[0]
            rec = self._steady_remove(s)
            self._steady_add(s, link_idx, rec[1], rec[2], moved)
            self._mark()
            return
        self._off_route(s)  # moved on its own: it no longer follows a route
        self._move_class_member(s, link_idx)
        self._mark()

    def _move_class_member(self, s: int, link_idx: tuple[int, ...]) -> None:
        c = self._cls[s]
        moved, left = self._progress(s)
        cap, w = self._c_cap[c], self._c_w[c]
        self._leave(s)
        self._join(s, link_idx, cap, w, moved, left)

    def set_cap(self, flow: Flow, cap_mib_s: float | None, weight: float | None = None) -> None:
        if not flow.active:
            return
        s = flow.slot
        if s in self._steady:
            if cap_mib_s is None or not math.isfinite(cap_mib_s):
                raise ValueError("a steady flow has a finite cap")
            moved = self._steady_progress(s)[0]
            rec = self._steady_remove(s)
            self._steady_add(s, rec[5], float(cap_mib_s), rec[2] if weight is None else float(weight), moved, rec[0])
            self._mark()
            return
        c = self._cls[s]
        moved, left = self._progress(s)
        links, w = self._c_links[c], self._c_w[c] if weight is None else float(weight)
        self._leave(s)
        self._join(s, links, math.inf if cap_mib_s is None else float(cap_mib_s), w, moved, left)
        self._mark()

    def set_ops(self, flow: Flow, ops_per_mib: float) -> None:
        s = flow.slot
        if not flow.active or self._opm[s] == ops_per_mib:
            return
        if s in self._steady:
            self.set_ops_many([flow], [ops_per_mib])
            return
        c = self._cls[s]
        self._c_opm[c] += float(ops_per_mib) - self._opm[s]
        self._opm[s] = float(ops_per_mib)
        self._opm_changed.add(c)
        self._mark()

    def set_ops_many(self, flows: list[Flow], ops_per_mib: list[float]) -> None:
        """`set_ops` for each flow with its value (the write flows of a LUN's VMs re-priced)."""
        steady, opm, k_of = self._steady, self._opm, self._k
        acc: dict[int, float] = {}  # ops class -> its base sum, updated in the same order as one by one
        for flow, x in zip(flows, ops_per_mib, strict=True):
            s = flow.slot
            if not flow.active or opm[s] == x:
                continue
            rec = steady.get(s)
            if rec is None:
                self.set_ops(flow, x)
                continue
            k = k_of[s]
            acc[k] = acc.get(k, float(self._ops_base[k])) + rec[1] * (float(x) - opm[s])
            opm[s] = float(x)
        for k, v in acc.items():
            self._ops_base[k] = v
        if acc:
            self._mark()

    def steady_ops(self, flows: list[Flow]) -> SteadyOps | None:
        """A handle for re-pricing these steady flows' ops together (`set_steady_ops`), or None if
        they are not all steady flows of one ops class (then use `set_ops_many`)."""
        if self._steady_off or not flows or not all(f.active for f in flows):
            return None
        slots = [f.slot for f in flows]
        recs = [self._steady.get(s) for s in slots]
        if any(r is None for r in recs) or len({self._k[s] for s in slots}) != 1:
            return None
        return SteadyOps(slots, self._k[slots[0]], [r[1] for r in recs], self._stok)

    def set_steady_ops(self, batch: SteadyOps, ops_per_mib: np.ndarray) -> bool:
        """`set_ops_many` for a handle's flows (`steady_ops`), in numpy: each flow's ops change
        (cap x the change of its ops per MiB) is added to its class's sum in the flows' order
        (np.add.accumulate adds one after the other, as the loop of `set_ops_many` does). False, and
        nothing done, once a flow of it has ended or changed (then use `set_ops_many`)."""
        if self._steady_off or batch.get(self._stok) != batch.tokens:
            return False
        opm, k = self._opm, batch.k
        if self._sums_module is not None:  # (the same, compiled)
            base = self._sums_module.steady_ops(opm, batch.slot_arr, batch.caps, ops_per_mib, self._ops_base.item(k))
            if base is None:
                return True
            self._ops_base[k] = base
        else:
            old = batch.get(opm)
            xs = ops_per_mib.tolist()
            if tuple(xs) == old:
                return True
            change = batch.caps * (ops_per_mib - np.array(old, dtype=float))
            self._ops_base[k] = np.add.accumulate(np.concatenate(([self._ops_base[k]], change)))[-1]
            deque(map(opm.__setitem__, batch.slots, xs), maxlen=0)  # (each slot's, in C: 100 a LUN at 8,000 VMs)
        self._mark()
        return True

    def set_capacity(self, link: str, mib_s: float) -> None:
        """Change a link's capacity from now on (a slowed backup target, a failed array controller);
        the flows crossing it are shared out again at the end of this instant."""
        if not mib_s > 0:
            raise ValueError("link capacity must be > 0")
        i = self.lidx[link]
        self.capacity[i] = float(mib_s)  # in place: readers of `capacity` see the change
        self._pcapacity[i] = float(mib_s)
        self._cap_tol[i] = float(mib_s) * (1 + 1e-12)
        self._seeds.add(i)  # its region is re-solved at the end of this instant (not by the sums)
        self._d_check.add(i)  # its steady load may no longer fit
        self._force_solve = True
        self._mark()

    def settle_now(self) -> None:
        """Allocate now any change pending for the end of this instant (for a measurement)."""
        if self._dirty:
            self._recompute()

    def link_load(self) -> dict[str, float]:
        return dict(zip(self.link_names, self._loads().tolist(), strict=True))

    def _end(self, f: Flow, ok: bool) -> None:
        s = f.slot
        moved, left = self._progress(s)
        f._final = (moved, 0.0 if ok else left)
        f._cap = self._flow_cap(s)
        f.active = False
        del self.flows[s]
        self._off_route(s)
        if s in self._steady:
            self._steady_remove(s)
            if not self.flows:  # as _leave: exact zeros when nothing runs
                self._ops_base[:] = 0.0
                self._opc[:] = 0.0
        else:
            self._leave(s)
        self._free.append(s)
        f.done.succeed(ok)

    # ---- recomputation ------------------------------------------------------------------
    def _mark(self) -> None:
        # All flows starting or ending at this instant are allocated together, once.
        if not self._dirty:
            self._dirty = True
            self.hooks.request(FLUID, self._recompute)

    def _recompute(self) -> None:
        self._dirty = False
        self.recomputes += 1
        self._allocate()
        self._record()
        for fn in self.listeners:
            fn()
        self.changed_links = set()
        self._schedule_next_completion()

    def _record(self) -> None:
        bidx = self._bidx
        if len(bidx) == 1 and self._sums_c is not None:  # (the same, compiled)
            load, by_class, ops = self._sums_c.record(self._lam, bidx.item())
        else:
            load = self._loads()
            if len(bidx) == 1:  # (as in _loads)
                b = bidx.item()
                by_class = self._ops_base + self._opc[b] * self._lam.item(b)
            else:
                by_class = self._ops_base + self._lam[bidx] @ self._opc[bidx]
            ops = float(by_class.sum())
        t = float(self.env.now)
        if self.hist_t and self.hist_t[-1] == t:
            self.hist_load[-1] = load
            self.hist_ops[-1] = ops
            self.hist_ops_class[-1] = by_class
        else:
            self.hist_t.append(t)
            self.hist_load.append(load)
            self.hist_ops.append(ops)
            self.hist_ops_class.append(by_class)
