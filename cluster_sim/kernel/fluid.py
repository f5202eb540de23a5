"""Fluid resource model: links with capacities, flows with sizes and optional rate caps.

Rates are max-min fair (weighted), found by progressive filling: raise every unfrozen flow's
rate in proportion to its weight until a link saturates or a flow reaches its cap, freeze those
flows, repeat (Bertsekas & Gallager, *Data Networks*, 2nd ed., section 6.5.2). Rates are
recomputed only when a flow starts, ends or changes its cap, and at most once per simulated
instant however many flows change in it. Each flow's `done` event fires exactly once: with
True when its size has been transferred, with False when it is stopped early.

A weight lets one flow stand for n identical flows (n VMs with the same path and demand):
a flow with weight n and cap n*c receives exactly what n flows with cap c would.

The recomputation is incremental (SimGrid's LMM "selective update", made exact for max-min
with caps and taken further): it rests on the bottleneck characterisation of max-min fairness
(the allocation is the unique feasible one in which every flow below its cap crosses a
saturated link on which no flow has a higher level). Only the links that froze flows in the
last filling ("binding" links) tie flows together, so a change first solves, for the binding
links it touches, their saturation equations again with every flow keeping its state (at its
cap, or frozen by a given link), and keeps that if the conditions still hold; otherwise it
re-solves by progressive filling the region of binding links the change touches, closed over
the frozen flows on them, plus any link the new rates would overload. Everything else keeps
its rate. See `FluidNetwork`. `max_min_fair()` (the full solve, round by round) is the
reference the tests compare it with.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

from cluster_sim.kernel.instant import FLUID, InstantHooks

_EPS = 1e-9
HISTORY = 1024  # recomputations kept in FluidNetwork.hist_* (listeners read the last one)


def _saturation_level(fl: list[int], room: float, frozen: dict[int, float], cap: Any, weight: Any,
                      level: Any) -> float | None:
    """The water level at which a link saturates, or None if it never does.

    fl: the link's flows sorted by cap level (cap / weight); room: its capacity left after the
    frozen flows. Flows below the level run at their caps, so one pass in ascending cap level
    finds who reaches the cap before the link fills.
    """
    room = max(room, 0.0)
    wsum = 0.0
    for j in fl:
        if j not in frozen:
            wsum += weight[j]
    if wsum <= 0.0:
        return None
    for j in fl:
        if j in frozen:
            continue
        lam = room / wsum
        if lam <= level[j]:
            return lam
        room -= cap[j]
        wsum -= weight[j]
    # every open flow fits at its cap, and frozen flows only ever give capacity back: this link
    # never saturates
    return None


def _freeze(fl: list[int], lam: float, frozen: dict[int, float], residual: dict[int, float], links_of: Any,
            cap: Any, weight: Any, level: Any, by: dict[int, int] | None = None, link: int = -1) -> list[int]:
    """Freeze a saturated link's open flows at the level (noting in `by` which link froze those
    it holds below their caps); returns the links whose room shrank."""
    hit = []
    for j in fl:
        if j in frozen:
            continue
        r = min(cap[j], weight[j] * lam)
        frozen[j] = r
        if by is not None and level[j] >= lam:  # (below the level it is at its cap)
            by[j] = link
        for o in links_of[j]:
            if o in residual:
                residual[o] -= r
                hit.append(o)
    return hit


def _check_bounded(flows_on: dict[int, list[int]], frozen: dict[int, float], cap: Any) -> None:
    for fl in flows_on.values():
        for j in fl:
            if j not in frozen and cap[j] == math.inf:
                raise ValueError("unbounded flow rate: a flow has no finite link or cap")


def _water_fill(residual: dict[int, float], flows_on: dict[int, list[int]], links_of: Any,
                cap: Any, weight: Any, level: Any) -> dict[int, float]:
    """Progressive filling restricted to overloaded links (see `_progressive_fill`), round by round.

    residual: capacity of each overloaded link; flows_on: its flows, sorted by cap level
    (cap / weight); links_of[j]: the links flow j crosses (others than the overloaded ones are
    ignored); cap, weight, level: per flow. Returns the rate of each flow a link froze below or
    at its cap; every other flow runs at its cap. Each round computes every open link's level
    and saturates the lowest: the plain algorithm, kept as the reference for `_fill`.
    """
    residual = dict(residual)
    frozen: dict[int, float] = {}
    open_links = set(residual)
    while open_links:
        best, best_o = math.inf, -1
        for o in list(open_links):
            lam = _saturation_level(flows_on[o], residual[o], frozen, cap, weight, level)
            if lam is None:
                open_links.discard(o)
            elif lam < best:
                best, best_o = lam, o
        if best_o < 0:
            break
        open_links.discard(best_o)
        _freeze(flows_on[best_o], best, frozen, residual, links_of, cap, weight, level)
    _check_bounded(flows_on, frozen, cap)
    return frozen


def _fill(links: list[int], capacity: Any, flows_on: dict[int, list[int]], links_of: Any, cap: Any, weight: Any,
          level: Any) -> tuple[dict[int, float], dict[int, int], list[tuple[int, float]]]:
    """`_water_fill` over `links` (overloaded links; their flows in `flows_on`, sorted by cap
    level), with a heap.

    Freezing flows at level L only raises the saturation level of the other links they cross
    (their frozen share is at most what the filling would give them there), so a level computed
    before is a lower bound: each link waits in a heap under its last level and is recomputed
    only when it comes out on top after some of its flows were frozen. The link taken is the one
    with the lowest level (the lowest index among equal levels), as in `_water_fill`'s scan.
    Returns the frozen flows' rates, the link that froze each, and the links that froze flows
    ("binding") with their levels, in order. A flow without a cap that no link froze is left to
    the caller.
    """
    residual = {o: capacity[o] for o in links}
    frozen: dict[int, float] = {}
    by: dict[int, int] = {}
    binding: list[tuple[int, float]] = []
    heap: list[tuple[float, int]] = []
    for o in links:
        lam = _saturation_level(flows_on[o], residual[o], frozen, cap, weight, level)
        if lam is not None:
            heap.append((lam, o))
    heapq.heapify(heap)
    stale: set[int] = set()
    while heap:
        lam, o = heapq.heappop(heap)
        if o in stale:  # some of its flows were frozen since: its level can only have risen
            stale.discard(o)
            new = _saturation_level(flows_on[o], residual[o], frozen, cap, weight, level)
            if new is not None:
                heapq.heappush(heap, (new, o))
            continue
        binding.append((o, lam))
        stale.update(_freeze(flows_on[o], lam, frozen, residual, links_of, cap, weight, level, by, o))
    return frozen, by, binding


def _progressive_fill(
    cap_links: np.ndarray, inc: np.ndarray, caps: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Weighted max-min fair rates (progressive filling with rate caps).

    cap_links: (L,) link capacities; inc: (L, F) bool incidence; caps: (F,) rate caps (inf = none);
    weights: (F,) positive weights. Returns (F,) rates.

    A link that can carry every flow crossing it at that flow's cap never saturates, and lowering
    other flows never changes that, so only the overloaded links (load at caps above capacity)
    take part. The filling raises one water level: each flow's rate is min(cap, weight x level).
    Each round finds, for every overloaded link still open, the level at which it would saturate
    (flows sorted by cap level, a single pass); the link with the lowest level saturates first
    and freezes its flows there, and the others' remaining capacity drops by what they take.
    Flows never frozen by a link end at their caps.
    """
    n_flows = inc.shape[1]
    if n_flows == 0:
        return np.zeros(0)
    finite = np.isfinite(caps)
    if np.any(~inc.any(axis=0) & ~finite):
        raise ValueError("a flow with no links must have a rate cap")
    capped_load = inc.astype(float) @ np.where(finite, caps, 0.0)
    over = np.flatnonzero(inc[:, ~finite].any(axis=1) | (capped_load > cap_links)).tolist()
    rate = caps.astype(float)
    if not over:
        return rate  # every flow runs at its cap
    cap_of, w_of = caps.tolist(), weights.tolist()
    level_of = [c / w for c, w in zip(cap_of, w_of, strict=True)]
    flows_on = {o: sorted(np.flatnonzero(inc[o]).tolist(), key=level_of.__getitem__) for o in over}
    links_of = [np.flatnonzero(inc[:, j]).tolist() for j in range(n_flows)]
    frozen = _water_fill({o: float(cap_links[o]) for o in over}, flows_on, links_of, cap_of, w_of, level_of)
    if frozen:
        rate[list(frozen)] = list(frozen.values())
    return rate


def max_min_fair(
    capacities: dict[str, float],
    flows: dict[str, tuple[list[str], float | None]],
    weights: dict[str, float] | None = None,
) -> dict[str, float]:
    """Max-min fair rates. `flows` maps flow -> (links it crosses, rate cap or None)."""
    links = list(capacities)
    lidx = {name: i for i, name in enumerate(links)}
    names = list(flows)
    inc = np.zeros((len(links), len(names)), dtype=bool)
    caps = np.full(len(names), np.inf)
    for j, name in enumerate(names):
        path, cap = flows[name]
        for link in path:
            if link not in lidx:
                raise KeyError(f"flow {name!r} crosses unknown link {link!r}")
            inc[lidx[link], j] = True
        if cap is not None:
            if cap < 0:
                raise ValueError(f"flow {name!r} has a negative cap")
            caps[j] = cap
    for name, c in capacities.items():
        if c < 0:
            raise ValueError(f"link {name!r} has a negative capacity")
    w = np.array([float((weights or {}).get(n, 1.0)) for n in names]) if names else np.zeros(0)
    if np.any(w <= 0):
        raise ValueError("weights must be positive")
    rates = _progressive_fill(np.array([capacities[link] for link in links], dtype=float), inc, caps, w)
    return {n: float(r) for n, r in zip(names, rates, strict=True)}


_NEW = -2  # class state: not allocated yet (rate 0)
_CAPPED = -1  # class state: every member at its cap; a link index >= 0: frozen by that link


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
        return self.net._c_cap[self.net._cls[self.slot]] if self.active else self._cap


class FluidNetwork:
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

    Listeners (`listeners`, called after every recomputation) read the state through
    `hist_load[-1]` (link loads, array (L,)), `hist_ops[-1]` (array back-end ops/s) and
    `changed_links` (the links whose load may have changed in that recomputation). The
    `hist_*` deques keep the last `history` recomputations (HISTORY by default, None: all).
    """

    _SLACK_S = 1e-6  # flows the completion heap says end this close to a timer are checked there
    _REBASE = 1e6  # a clock this far from 0 is brought back to 0 (keeps its precision)
    _FAST_LIMIT = 1000  # level updates of a binding link by sums before they are redone exactly

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
        self._capload: list[float] = [0.0] * n_links  # members' finite caps (re-summed near capacity)
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
    ) -> Flow:
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
                for c in self._on_link[self.lidx[name]]:
                    slots |= self._c_members[c]
        flows = [self.flows[s] for s in sorted(slots)]
        for f in flows:
            self.stop(f)
        return flows

    def reroute(self, flow: Flow, links: list[str] | tuple[str, ...]) -> None:
        """Move a live flow onto other links; its size, progress, cap, weight and ops stay."""
        if not flow.active:
            return
        link_idx = tuple(self.lidx[n] for n in links)
        s = flow.slot
        c = self._cls[s]
        moved, left = self._progress(s)
        cap, w = self._c_cap[c], self._c_w[c]
        self._leave(s)
        self._join(s, link_idx, cap, w, moved, left)
        self._mark()

    def set_cap(self, flow: Flow, cap_mib_s: float | None, weight: float | None = None) -> None:
        if not flow.active:
            return
        s = flow.slot
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
        c = self._cls[s]
        self._c_opm[c] += float(ops_per_mib) - self._opm[s]
        self._opm[s] = float(ops_per_mib)
        self._opm_changed.add(c)
        self._mark()

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
        self._force_solve = True
        self._mark()

    def settle_now(self) -> None:
        """Allocate now any change pending for the end of this instant (for a measurement)."""
        if self._dirty:
            self._recompute()

    def link_load(self) -> dict[str, float]:
        return dict(zip(self.link_names, self._loads().tolist(), strict=True))

    # ---- flows and classes ------------------------------------------------------------------
    def _grow(self) -> None:
        old = len(self._cls)
        self._free.extend(range(2 * old - 1, old - 1, -1))
        self._cls += [-1] * old
        self._tok += [0] * old
        self._k += [0] * old
        for name in ("_opm", "_v0", "_moved0", "_left0"):
            getattr(self, name).extend([0.0] * old)

    def _class(self, links: tuple[int, ...], cap: float, w: float, k: int) -> int:
        key = (links, cap, w, k)
        c = self._ckey.get(key)
        if c is not None:
            return c
        if self._cfree:
            c = self._cfree.pop()
            self._c_links[c], self._c_cap[c], self._c_w[c], self._c_level[c] = links, cap, w, cap / w
            self._c_k[c] = k
            self._c_acap[c] = self._c_aw[c] = 0.0
            self._c_state[c], self._c_n[c] = _NEW, 0
            self._c_opm[c] = self._c_opmc[c] = self._c_clock0[c] = self._c_ref[c] = 0.0
            self._c_heap[c] = []
        else:
            c = len(self._c_links)
            for name, value in (("_c_links", links), ("_c_cap", cap), ("_c_w", w), ("_c_k", k), ("_c_level", cap / w),
                                ("_c_acap", 0.0), ("_c_aw", 0.0), ("_c_members", set()), ("_c_state", _NEW),
                                ("_c_n", 0), ("_c_opm", 0.0), ("_c_opmc", 0.0), ("_c_clock0", 0.0), ("_c_ref", 0.0),
                                ("_c_heap", []), ("_c_ver", 0)):
                getattr(self, name).append(value)
        self._ckey[key] = c
        for li in links:
            self._on_link[li].add(c)
            self._sorted[li] = None
        return c

    def _vnow(self, b: int) -> float:
        """V(b) now."""
        return self._V[b] + self._plam[b] * (self.env.now - self._Vt[b])

    def _clock(self, c: int) -> float:
        st = self._c_state[c]
        if st == _CAPPED:
            return self._c_clock0[c] + self._c_cap[c] * (self.env.now - self._c_ref[c])
        if st >= 0:
            return self._c_clock0[c] + self._c_w[c] * (self._vnow(st) - self._c_ref[c])
        return self._c_clock0[c]

    def _rate(self, c: int) -> float:
        """Rate per member of class c."""
        st = self._c_state[c]
        if st == _CAPPED:
            return self._c_cap[c]
        return self._c_w[c] * self._plam[st] if st >= 0 else 0.0

    def _member_rate(self, s: int) -> float:
        return 0.0 if s in self._fresh else self._rate(self._cls[s])

    def _progress(self, s: int) -> tuple[float, float]:
        """(transferred, remaining) of the flow in slot s now."""
        d = self._clock(self._cls[s]) - self._v0[s]
        return self._moved0[s] + d, max(0.0, self._left0[s] - d)

    def _join(self, s: int, links: tuple[int, ...], cap: float, w: float, moved: float, left: float) -> None:
        c = self._class(links, cap, w, self._k[s])
        clock = self._clock(c)
        self._cls[s] = c
        self._tok[s] += 1
        self._v0[s], self._moved0[s], self._left0[s] = clock, moved, left
        self._c_members[c].add(s)
        n = len(self._c_members[c])
        self._c_acap[c], self._c_aw[c] = n * cap, n * w
        self._c_opm[c] += self._opm[s]
        if left != math.inf:
            heapq.heappush(self._c_heap[c], (clock + left, s, self._tok[s]))
        for li in links:
            if cap == math.inf:
                self._uncapped[li] += 1
            else:
                self._capload[li] += cap
        self._fresh.add(s)
        self._touched.add(c)

    def _leave(self, s: int) -> None:
        """Take the flow out of its class; the class is recounted at the recomputation."""
        c = self._cls[s]
        members = self._c_members[c]
        members.discard(s)
        self._fresh.discard(s)
        n = len(members)
        links, cap = self._c_links[c], self._c_cap[c]
        self._c_acap[c], self._c_aw[c] = n * cap, n * self._c_w[c]
        self._c_opm[c] -= self._opm[s]
        for li in links:
            if cap == math.inf:
                self._uncapped[li] -= 1
            else:
                self._capload[li] -= cap
        self._cls[s] = -1
        if n:
            self._touched.add(c)
            return
        # the class is empty: gone
        self._contribute(c, -1)
        st = self._c_state[c]
        self._hold(st, -1)
        self._c_state[c], self._c_n[c] = _NEW, 0
        del self._ckey[(links, cap, self._c_w[c], self._c_k[c])]
        self._c_ver[c] += 1
        self._touched.discard(c)
        self._opm_changed.discard(c)
        self._levels_move(c, st, _NEW)
        for li in links:
            self._on_link[li].discard(c)
            self._sorted[li] = None
            if not self._on_link[li]:
                self._P[li] = 0.0
                self._C[li, :] = 0.0
                if not self._uncapped[li]:
                    self._capload[li] = 0.0
            if self._binding[li]:
                self._seeds.add(li)  # its other classes may rise
        if st >= 0:
            self._link_entry(st)
        if not self.flows:
            self._ops_base[:] = 0.0
            self._opc[:] = 0.0
        self._cfree.append(c)

    def _end(self, f: Flow, ok: bool) -> None:
        s = f.slot
        moved, left = self._progress(s)
        f._final = (moved, 0.0 if ok else left)
        f._cap = self._c_cap[self._cls[s]]
        f.active = False
        del self.flows[s]
        self._leave(s)
        self._free.append(s)
        f.done.succeed(ok)

    # ---- states and sums --------------------------------------------------------------------
    def _hold(self, st: int, sign: int) -> None:
        """Count a class in (+1) or out of (-1) the classes link st holds."""
        if st >= 0:
            self._nfrozen[st] += sign
            if not self._nfrozen[st]:  # nothing frozen by it: its column is exactly 0, not drift
                self._C[:, st] = 0.0
                self._opc[st, :] = 0.0

    def _contribute(self, c: int, sign: int) -> None:
        """Add (sign +1) or take out (-1) the class's counted members from the sums."""
        st, n = self._c_state[c], self._c_n[c]
        if st == _NEW or not n:
            return
        links = self._c_links[c]
        if st == _CAPPED:
            x = sign * n * self._c_cap[c]
            for li in links:
                self._P[li] += x
            self._ops_base[self._c_k[c]] += sign * self._c_cap[c] * self._c_opmc[c]
        else:
            x = sign * n * self._c_w[c]
            for li in links:
                self._C[li, st] += x
            self._opc[st, self._c_k[c]] += sign * self._c_w[c] * self._c_opmc[c]
        self.changed_links.update(links)

    def _levels_move(self, c: int, old: int, new: int) -> None:
        """Keep the cached level bounds of c's links as c goes from state old to new."""
        level = self._c_level[c]
        for li in self._c_links[c]:
            lo, hi = self._minf[li], self._maxc[li]
            if (old == li and lo is not None and level <= lo) or (old == _CAPPED and hi is not None and level >= hi):
                self._minf[li] = self._maxc[li] = None  # it may have been the bound: find it again
                continue
            if new == li and lo is not None:
                self._minf[li] = min(lo, level)
            elif new == _CAPPED and hi is not None:
                self._maxc[li] = max(hi, level)

    def _set_state(self, c: int, st: int) -> None:
        """Give class c state st from now, counting its members as they are now."""
        clock = self._clock(c)
        old = self._c_state[c]
        self._contribute(c, -1)
        if st != old:
            self._levels_move(c, old, st)
            self._hold(old, -1)
            self._hold(st, +1)
        self._c_state[c] = st
        self._c_n[c] = len(self._c_members[c])
        self._c_opmc[c] = self._c_opm[c]
        if clock > self._REBASE:
            self._rebase_class(c, clock)
            clock = 0.0
        self._c_clock0[c] = clock
        self._c_ref[c] = self.env.now if st == _CAPPED else self._vnow(st) if st >= 0 else 0.0
        self._contribute(c, +1)
        self._c_ver[c] += 1
        self._schedule_class(c)
        if old >= 0 and old != st:
            self._link_entry(old)

    def _rebase_class(self, c: int, shift: float) -> None:
        for s in self._c_members[c]:
            self._v0[s] -= shift
        self._c_heap[c] = [(v - shift, s, k) for v, s, k in self._c_heap[c] if self._tok[s] == k]
        heapq.heapify(self._c_heap[c])

    def _set_level(self, b: int, lam: float, binding: bool = True) -> None:
        """A new water level of link b from now (0 and not binding: it froze nothing)."""
        self._V[b] = self._vnow(b)
        self._Vt[b] = self.env.now
        if self._V[b] > self._REBASE:
            self._rebase_link(b)
        if lam != self._plam[b]:  # the loads of the links its classes cross move with it
            self.changed_links.update(np.flatnonzero(self._C[:, b]).tolist())
        self._plam[b] = lam
        self._lam[b] = lam
        if self._binding[b] != binding:
            self._binding[b] = binding
            self._bind_np[b] = binding
            self._blist = sorted(set(self._blist) ^ {b})
            self._bidx = np.array(self._blist, dtype=int)
        self._link_entry(b)

    def _rebase_link(self, b: int) -> None:
        shift = self._V[b]
        self._V[b] = 0.0
        for c in self._on_link[b]:
            if self._c_state[c] == b:
                self._c_ref[c] -= shift
        self._H[b] = [(v - shift, c, k) for v, c, k in self._H[b]]
        heapq.heapify(self._H[b])

    def _level_bounds(self, b: int) -> tuple[float, float]:
        """(lowest cap level of the classes b froze, highest of the capped classes on b)."""
        lo, hi = self._minf[b], self._maxc[b]
        if lo is None or hi is None:
            lo, hi = math.inf, -math.inf
            for c in self._on_link[b]:
                st = self._c_state[c]
                if st == b:
                    lo = min(lo, self._c_level[c])
                elif st == _CAPPED:
                    hi = max(hi, self._c_level[c])
            self._minf[b], self._maxc[b] = lo, hi
        return lo, hi

    def _resum(self, li: int) -> None:
        """Redo link li's sums exactly from its classes (clears the drift of updates)."""
        caps: list[float] = []
        col: dict[int, list[float]] = {}
        for c in self._on_link[li]:
            st, n = self._c_state[c], self._c_n[c]
            if st == _CAPPED and n:
                caps.append(n * self._c_cap[c])
            elif st >= 0 and n:
                col.setdefault(st, []).append(n * self._c_w[c])
        self._P[li] = math.fsum(caps)
        self._C[li, :] = 0.0
        for b, ws in col.items():
            self._C[li, b] = math.fsum(ws)
        self._fast_n[li] = 0

    def _loads(self, lam: np.ndarray | None = None) -> np.ndarray:
        """Link loads at the levels `lam` (default: the present ones)."""
        lam = self._lam if lam is None else lam
        bidx = self._bidx
        return self._P + self._C[:, bidx] @ lam[bidx] if len(bidx) else self._P.copy()

    # ---- allocation -------------------------------------------------------------------------
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

    def _over(self, li: int) -> bool:
        """Would the link's flows at their caps exceed its capacity (only such links ever bind)?"""
        if self._uncapped[li]:
            return True
        c, capload = self._pcapacity[li], self._capload[li]
        if capload > c * (1 + 1e-9):
            return True
        if capload > c * (1 - 1e-9):  # near: sum exactly, which also clears drift
            capload = self._capload[li] = math.fsum(self._c_acap[k] for k in self._on_link[li])
            return capload > c
        return False

    def _overloaded(self, lam: np.ndarray) -> list[int]:
        """Links other than binding ones that the levels `lam` load beyond their capacity."""
        hit = np.flatnonzero((self._loads(lam) > self._cap_tol) & ~self._bind_np)
        return [li for li in hit.tolist() if self._over(li)]

    def _allocate(self) -> None:
        """Max-min rates after this instant's changes: by the sums if the states still hold,
        else by re-solving the region the change touches."""
        touched, seeds = self._touched, self._seeds
        self._touched, self._seeds = set(), set()
        self._fresh = set()
        for c in self._opm_changed - touched:
            self._set_state(c, self._c_state[c])  # recount its ops
        self._opm_changed = set()
        if not touched and not seeds:
            return
        force, self._force_solve = self._force_solve, False
        if not force and self._by_sums(touched, seeds):
            self.fast += 1
        else:
            self._solve(touched, seeds)

    def _classify(self, c: int) -> int | None:
        """A new class's state as the present levels make it (None: only a solve can tell)."""
        bl = [li for li in self._c_links[c] if self._binding[li]]
        if bl:
            b = min(bl, key=lambda li: (self._plam[li], li))
            if self._c_level[c] >= self._plam[b]:
                return b
        return None if self._c_cap[c] == math.inf else _CAPPED

    def _by_sums(self, touched: set[int], seeds: set[int]) -> bool:
        """Recount the changed classes in their states and solve the saturation equations of the
        binding links they touch; True if that is still the max-min allocation (then kept)."""
        binding, plam, C = self._binding, self._plam, self._C
        affected = set(seeds)
        grew = False  # some load may have grown (else no link can have become overloaded)
        for c in touched:
            st = self._c_state[c]
            if st == _NEW:
                got = self._classify(c)
                if got is None:
                    seeds.update(li for li in self._c_links[c] if binding[li])
                    return False
                st = got
            grew = grew or st != self._c_state[c] or len(self._c_members[c]) > self._c_n[c]
            self._set_state(c, st)
            affected.update(li for li in self._c_links[c] if binding[li])
        blist = self._blist
        lam: dict[int, float] = {}  # new levels
        heap = [(plam[b], b) for b in affected if binding[b]]
        heapq.heapify(heap)
        budget = 4 * len(heap) + 16
        while heap:  # in order of level: a link's equation holds the levels of lower ones
            _, b = heapq.heappop(heap)
            budget -= 1
            row = C[b]
            w = float(row[b])
            if budget < 0 or not self._nfrozen[b] or w <= 0.0 or self._fast_n[b] >= self._FAST_LIMIT:
                seeds.update(lam)
                seeds.add(b)
                return False
            held = self._pcapacity[b] - float(self._P[b])
            for b2 in blist:
                if b2 != b and row[b2]:
                    held -= float(row[b2]) * lam.get(b2, plam[b2])
            new = held / w
            old = lam.get(b, plam[b])
            lam[b] = new
            if new != old:  # the links crossed by the classes it freezes: their equations hold it
                for b2 in blist:
                    if b2 != b and C[b2, b]:
                        heapq.heappush(heap, (lam.get(b2, plam[b2]), b2))
        for b, lb in lam.items():
            lo, hi = self._level_bounds(b)
            if lb < 0.0 or lo < lb or hi > lb:
                seeds.update(lam)
                return False
            for b2 in blist:  # no class crosses a link with a lower level than the one freezing it
                if b2 != b and ((C[b2, b] and lam.get(b2, plam[b2]) < lb) or (C[b, b2] and lam.get(b2, plam[b2]) > lb)):
                    seeds.update(lam)
                    return False
        if lam:
            levels = self._lam.copy()
            for b, lb in lam.items():
                levels[b] = lb
                grew = grew or lb > plam[b]
        else:
            levels = self._lam
        if grew and self._overloaded(levels):
            seeds.update(lam)
            return False
        for b, lb in lam.items():
            if lb != plam[b]:
                self._set_level(b, lb)
                self._fast_n[b] += 1
        return True

    def _solve(self, touched: set[int], seeds: set[int]) -> None:
        """Re-solve the region of binding links the change touches (see the class docstring).

        R starts from the seeds and the binding links of the changed classes and is closed over
        the frozen classes: such a class on R brings in every binding link it crosses (a capped
        class ties nothing together). The overloaded links of R are filled (`_fill`) with all
        their classes; a class's new state is the link that froze it, or capped. A link outside
        R that this loads beyond its capacity joins R and the solve repeats. Every class outside
        keeps its state and every link outside its level.
        """
        binding, links_of, on_link, state = self._binding, self._c_links, self._on_link, self._c_state
        region: set[int] = set()
        classes = set(touched)
        frontier = list(seeds)
        for c in touched:
            frontier += [li for li in links_of[c] if binding[li]]
        while True:
            while frontier:  # close R over binding links, through frozen classes
                li = frontier.pop()
                if li in region:
                    continue
                region.add(li)
                for c in on_link[li]:
                    if c not in classes and state[c] != _CAPPED:
                        classes.add(c)
                        for lk in links_of[c]:
                            if binding[lk] and lk not in region:
                                frontier.append(lk)
            fill = sorted(li for li in region if self._over(li))
            frozen, by, bound = _fill(fill, self._pcapacity, {li: self._sorted_on(li) for li in fill}, links_of,
                                      self._c_acap, self._c_aw, self._c_level)
            levels = dict(bound)
            for li in region:
                if binding[li] and li not in levels:
                    self._set_level(li, 0.0, binding=False)
            for li, lam in bound:
                self._set_level(li, lam)
            unbounded: list[int] = []  # links to bring in
            for c in classes.union(frozen):
                st = by.get(c, _CAPPED)
                if st == _CAPPED and self._c_cap[c] == math.inf:
                    if region.issuperset(links_of[c]):
                        raise ValueError("unbounded flow rate: a flow has no finite link or cap")
                    unbounded += [li for li in links_of[c] if li not in region]
                    st = _NEW  # no rate until its other links are solved too
                if st != state[c] or c in touched:
                    if state[c] < 0:  # a capped class that moves brings in its other binding links
                        unbounded += [li for li in links_of[c] if binding[li] and li not in region]
                    self._set_state(c, st)
            classes.update(frozen)  # (a repeat must look at them again)
            self.resolved += len(classes)
            frontier = unbounded + [li for li in self._overloaded(self._lam) if li not in region]
            if not frontier:
                break
        for li in fill:
            self._resum(li)

    def _sorted_on(self, li: int) -> list[int]:
        """The link's classes by cap level (kept until a class comes or goes)."""
        fl = self._sorted[li]
        if fl is None:
            fl = self._sorted[li] = sorted(self._on_link[li], key=self._c_level.__getitem__)
        return fl

    def _record(self) -> None:
        load = self._loads()
        bidx = self._bidx
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

    # ---- completions ------------------------------------------------------------------------
    def _first_member(self, c: int) -> int:
        """The member of class c that ends first (-1 if none), dropping entries of those that left."""
        heap, tok = self._c_heap[c], self._tok
        while heap:
            _, s, k = heap[0]
            if tok[s] == k and self._cls[s] == c:
                return s
            heapq.heappop(heap)
        return -1

    def _schedule_class(self, c: int) -> None:
        """Queue the next end of a member of class c (after a change of its state or members)."""
        s = self._first_member(c)
        st = self._c_state[c]
        if s < 0 or st == _NEW:
            return
        vfin = self._c_heap[c][0][0]
        if st == _CAPPED:
            cap = self._c_cap[c]
            if cap > 0:
                t = self._c_ref[c] + (vfin - self._c_clock0[c]) / cap
                heapq.heappush(self._heap, (t, 0, c, self._c_ver[c]))
        else:
            target = self._c_ref[c] + (vfin - self._c_clock0[c]) / self._c_w[c]
            heapq.heappush(self._H[st], (target, c, self._c_ver[c]))
            self._link_entry(st)

    def _link_top(self, b: int) -> int:
        """The class frozen by b whose member ends first (-1 if none)."""
        h, ver, state = self._H[b], self._c_ver, self._c_state
        while h:
            _, c, k = h[0]
            if k == ver[c] and state[c] == b:
                return c
            heapq.heappop(h)
        return -1

    def _link_entry(self, b: int) -> None:
        """Queue link b's next end (after a change of its level or of its first class)."""
        self._lver[b] += 1
        c = self._link_top(b)
        lam = self._plam[b]
        if c >= 0 and lam > 0 and self._binding[b]:
            t = self.env.now + (self._H[b][0][0] - self._vnow(b)) / lam
            heapq.heappush(self._heap, (t, 1, b, self._lver[b]))

    def _valid(self, entry: tuple[float, int, int, int]) -> int:
        """The class an entry of the completion heap stands for now (-1: void)."""
        _, kind, i, v = entry
        if kind == 0:
            return i if v == self._c_ver[i] and self._c_state[i] == _CAPPED else -1
        return self._link_top(i) if v == self._lver[i] else -1

    def _schedule_next_completion(self) -> None:
        self._timer_gen += 1
        heap = self._heap
        if len(heap) > 4 * (len(self._c_links) + len(self._V)) + 64:
            self._heap = heap = [e for e in heap if self._valid(e) >= 0]
            heapq.heapify(heap)
        while heap:
            c = self._valid(heap[0])
            if c >= 0:
                s = self._first_member(c)
                rate = self._rate(c)
                if s >= 0 and rate > 0:
                    best = self._progress(s)[1] / rate
                    ev = self.env.timeout(best)
                    ev.callbacks.append(lambda _e, gen=self._timer_gen: self._on_timer(gen))
                    return
            heapq.heappop(heap)

    def _due_members(self, c: int, due: list[int]) -> bool:
        """Move class c's members that end now into `due`; True if any did."""
        r = self._rate(c)
        now = self.env.now
        members = self._c_heap[c]
        ending = False
        while (s := self._first_member(c)) >= 0:
            rem = self._progress(s)[1]
            left_s = rem / r if r > 0 else math.inf
            # due: nothing left, or less left than the clock can still resolve at this time
            # (otherwise a flow could be rescheduled for this same instant forever)
            if not (rem <= _EPS or left_s <= 1e-9 or now + left_s <= now):
                break
            due.append(heapq.heappop(members)[1])
            ending = True
        return ending

    def _on_timer(self, gen: int) -> None:
        if gen != self._timer_gen:
            return  # superseded by a later recomputation
        now = self.env.now
        heap = self._heap
        horizon = now + self._SLACK_S + 1e-12 * abs(now)
        due: list[int] = []
        later: list[tuple[float, int, int, int]] = []
        while heap and heap[0][0] <= horizon:
            entry = heapq.heappop(heap)
            if self._valid(entry) < 0:
                continue
            if entry[1] == 0:
                if not self._due_members(entry[2], due):
                    later.append(entry)
                continue
            b = entry[2]  # a link: its classes whose next member ends by the horizon
            h, lam, vnow = self._H[b], self._plam[b], self._vnow(b)
            keep: list[tuple[float, int, int]] = []
            ended = False
            while (c := self._link_top(b)) >= 0 and (h[0][0] - vnow) / lam <= horizon - now:
                item = heapq.heappop(h)
                if self._due_members(c, due):
                    ended = True
                else:
                    keep.append(item)
            for item in keep:
                heapq.heappush(h, item)
            if not ended:
                later.append(entry)
        for entry in later:
            heapq.heappush(heap, entry)
        for s in sorted(due):
            self._end(self.flows[s], True)
        self._mark()
