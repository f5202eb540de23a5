"""Fluid resource model: links with capacities, flows with sizes and optional rate caps.

Rates are max-min fair (weighted), found by progressive filling: raise every unfrozen flow's
rate in proportion to its weight until a link saturates or a flow reaches its cap, freeze those
flows, repeat (Bertsekas & Gallager, *Data Networks*, 2nd ed., section 6.5.2). Rates are
recomputed only when a flow starts, ends or changes its cap, and at most once per simulated
instant however many flows change in it. Each flow's `done` event fires exactly once: with
True when its size has been transferred, with False when it is stopped early.

A weight lets one flow stand for n identical flows (n VMs with the same path and demand):
a flow with weight n and cap n*c receives exactly what n flows with cap c would.

The recomputation is incremental (the idea of SimGrid's LMM "selective update", made exact for
max-min with caps): only the links that froze flows in the last filling ("binding" links) tie
flows together, so a change re-solves only the binding links it touches, closed over the flows
they carry (a flow on a binding link pulls in its other binding links), and keeps every other
rate. That is exact because the max-min allocation is the unique feasible one in which every
flow below its cap has a saturated link on which no flow has a higher level: kept flows keep
their bottleneck, which no re-solved flow crosses; re-solved flows get theirs inside the
re-solved links. One more condition is checked: a link outside them that a re-solved flow now
loads beyond its capacity joins them, and the solve repeats (see `FluidNetwork._allocate`).
`max_min_fair()` (the full solve, kept as the oracle) gives the same rates.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

from cluster_sim.kernel.instant import FLUID, InstantHooks

_EPS = 1e-9


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


def _freeze(fl: list[int], lam: float, frozen: dict[int, float], residual: dict[int, float],
            links_of: Any, cap: Any, weight: Any) -> list[int]:
    """Freeze a saturated link's open flows at the level; returns the links whose room shrank."""
    hit = []
    for j in fl:
        if j in frozen:
            continue
        r = min(cap[j], weight[j] * lam)
        frozen[j] = r
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
        _freeze(flows_on[best_o], best, frozen, residual, links_of, cap, weight)
    _check_bounded(flows_on, frozen, cap)
    return frozen


def _fill(links: list[int], capacity: Any, flows_on: dict[int, list[int]], links_of: Any, cap: Any, weight: Any,
          level: Any) -> tuple[dict[int, float], list[int]]:
    """`_water_fill` over `links` (overloaded links; their flows in `flows_on`, sorted by cap
    level), with a heap.

    Freezing flows at level L only raises the saturation level of the other links they cross
    (their frozen share is at most what the filling would give them there), so a level computed
    before is a lower bound: each link waits in a heap under its last level and is recomputed
    only when it comes out on top after some of its flows were frozen. The link taken is the one
    with the lowest level (the lowest index among equal levels), as in `_water_fill`'s scan.
    Returns the frozen flows' rates and the links that froze flows ("binding"), in order. A flow
    without a cap that no link froze is left to the caller.
    """
    residual = {o: capacity[o] for o in links}
    frozen: dict[int, float] = {}
    binding: list[int] = []
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
        binding.append(o)
        stale.update(_freeze(flows_on[o], lam, frozen, residual, links_of, cap, weight))
    return frozen, binding


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

    Identical flows (same links, cap and weight) get identical max-min rates, so they are solved
    as one class: a weighted flow of weight n x w and cap n x cap, as in the module docstring.
    A class keeps a clock, the transfer per member since it was created; a member's progress is
    the clock's advance since it joined, and its members wait in a heap by the clock reading at
    which they finish. A change of a class's rate thus costs the same for 1 or 8,000 members.
    Classes wait in a heap by the time their next member finishes (entries of an older rate
    being skipped). Per link the network keeps its classes, the sum of their caps, its load
    (updated rate change by rate change) and whether it froze flows in the last filling that
    covered it ("binding", see `_allocate`). A recomputation thus costs what the classes it
    re-solves cost, not what all flows cost.

    Listeners (`listeners`, called after every recomputation) read the state through
    `hist_load[-1]` (link loads, array (L,)), `hist_ops[-1]` (array back-end ops/s) and
    `changed_links` (the links whose load changed in that recomputation).
    """

    _SLACK_S = 1e-6  # classes the completion heap says end this close to a timer are checked there
    _REBASE = 1e6  # a class clock this far from 0 is brought back to 0 (keeps its precision)

    def __init__(self, env: simpy.Environment, capacities: dict[str, float], hooks: InstantHooks | None = None):
        self.env = env
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
        self._v0: list[float] = [0.0] * size
        self._moved0: list[float] = [0.0] * size
        self._left0: list[float] = [0.0] * size
        self._tok: list[int] = [0] * size  # counts its joins: heap entries of an earlier one are void
        self._fresh: set[int] = set()  # joined its class in this instant: rate 0 until allocated
        # per class
        self._ckey: dict[tuple[tuple[int, ...], float, float], int] = {}
        self._cfree: list[int] = []
        self._c_links: list[tuple[int, ...]] = []
        self._c_cap: list[float] = []  # per member
        self._c_w: list[float] = []
        self._c_level: list[float] = []  # cap / weight
        self._c_acap: list[float] = []  # n x cap, n x weight: the class as one weighted flow
        self._c_aw: list[float] = []
        self._c_members: list[set[int]] = []
        self._c_nc: list[int] = []  # members counted in the link loads
        self._c_opm: list[float] = []  # ops per MiB summed over members, all / counted
        self._c_opmc: list[float] = []
        self._c_rate: list[float] = []  # per member
        self._c_clock: list[float] = []
        self._c_t: list[float] = []  # time of the clock reading
        self._c_heap: list[list[tuple[float, int, int]]] = []  # (clock when it finishes, slot, token)
        self._c_ver: list[int] = []  # completion-heap entries of older versions are void
        # per link: its classes, the sum of their members' finite caps and how many have none
        # (re-summed exactly when the sum comes near the capacity), its load, binding or not
        self._on_link: list[set[int]] = [set() for _ in range(n_links)]
        self._capload: list[float] = [0.0] * n_links
        self._uncapped: list[int] = [0] * n_links
        self._pcapacity: list[float] = self.capacity.tolist()
        self._pload: list[float] = [0.0] * n_links
        self._binding: list[bool] = [False] * n_links
        self._sorted: list[list[int] | None] = [None] * n_links  # its classes by cap level, if known
        self._ops = 0.0
        # changes waiting for this instant's recomputation: classes that gained or lost members,
        # and binding links that lost a class
        self._touched: set[int] = set()
        self._seeds: set[int] = set()
        self._heap: list[tuple[float, int, int]] = []  # (next finishing time, class, version)
        self.flows: dict[int, Flow] = {}  # slot -> flow
        self._next_id = 0
        self._dirty = False
        self._timer_gen = 0
        self.recomputes = 0
        self.resolved = 0  # classes re-solved, summed over recomputations (for benchmarks)
        self.changed_links: set[int] = set()
        # history of piecewise-constant state: (time, link loads (L,), array back-end ops/s)
        self.hist_t: list[float] = []
        self.hist_load: list[np.ndarray] = []
        self.hist_ops: list[float] = []
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
        c, d = self._cls[s], float(ops_per_mib) - self._opm[s]
        self._c_opm[c] += d
        if s not in self._fresh:
            self._c_opmc[c] += d
            self._ops += self._c_rate[c] * d
        self._opm[s] = float(ops_per_mib)
        self._mark()

    def settle_now(self) -> None:
        """Allocate now any change pending for the end of this instant (for a measurement)."""
        if self._dirty:
            self._recompute()

    def link_load(self) -> dict[str, float]:
        return dict(zip(self.link_names, self._pload, strict=True))

    # ---- flows and classes ------------------------------------------------------------------
    def _grow(self) -> None:
        old = len(self._cls)
        self._free.extend(range(2 * old - 1, old - 1, -1))
        self._cls += [-1] * old
        self._tok += [0] * old
        for name in ("_opm", "_v0", "_moved0", "_left0"):
            getattr(self, name).extend([0.0] * old)

    def _class(self, links: tuple[int, ...], cap: float, w: float) -> int:
        key = (links, cap, w)
        c = self._ckey.get(key)
        if c is not None:
            return c
        now = self.env.now
        if self._cfree:
            c = self._cfree.pop()
            self._c_links[c], self._c_cap[c], self._c_w[c], self._c_level[c] = links, cap, w, cap / w
            self._c_acap[c] = self._c_aw[c] = 0.0
            self._c_nc[c] = 0
            self._c_opm[c] = self._c_opmc[c] = self._c_rate[c] = self._c_clock[c] = 0.0
            self._c_t[c] = now
            self._c_heap[c] = []
        else:
            c = len(self._c_links)
            self._c_links.append(links)
            self._c_cap.append(cap)
            self._c_w.append(w)
            self._c_level.append(cap / w)
            self._c_acap.append(0.0)
            self._c_aw.append(0.0)
            self._c_members.append(set())
            self._c_nc.append(0)
            self._c_opm.append(0.0)
            self._c_opmc.append(0.0)
            self._c_rate.append(0.0)
            self._c_clock.append(0.0)
            self._c_t.append(now)
            self._c_heap.append([])
            self._c_ver.append(0)
        self._ckey[key] = c
        for li in links:
            self._on_link[li].add(c)
            self._sorted[li] = None
        return c

    def _tick(self, c: int) -> float:
        """Bring the class clock up to now; returns it."""
        now = self.env.now
        dt = now - self._c_t[c]
        if dt > 0:
            self._c_clock[c] += self._c_rate[c] * dt
            self._c_t[c] = now
        return self._c_clock[c]

    def _join(self, s: int, links: tuple[int, ...], cap: float, w: float, moved: float, left: float) -> None:
        c = self._class(links, cap, w)
        clock = self._tick(c)
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
        """Take the flow out of its class (its load with it); the class is re-solved."""
        c = self._cls[s]
        self._tick(c)
        members = self._c_members[c]
        members.discard(s)
        n = len(members)
        links, cap = self._c_links[c], self._c_cap[c]
        self._c_acap[c], self._c_aw[c] = n * cap, n * self._c_w[c]
        opm = self._opm[s]
        self._c_opm[c] -= opm
        r = self._c_rate[c]
        counted = s not in self._fresh
        if not counted:
            self._fresh.discard(s)
        else:
            self._c_nc[c] -= 1
            self._c_opmc[c] -= opm
            if r:
                self._ops -= r * opm
        load, binding = self._pload, self._binding
        for li in links:
            if cap == math.inf:
                self._uncapped[li] -= 1
            else:
                self._capload[li] -= cap
            if r and counted:
                load[li] -= r
                self.changed_links.add(li)
        self._cls[s] = -1
        if n:
            self._touched.add(c)
            return
        # the class is empty: gone
        del self._ckey[(links, cap, self._c_w[c])]
        self._c_ver[c] += 1
        self._c_rate[c] = 0.0
        self._c_nc[c] = 0
        self._touched.discard(c)
        for li in links:
            self._on_link[li].discard(c)
            self._sorted[li] = None
            if not self._on_link[li]:
                load[li] = 0.0
                if not self._uncapped[li]:
                    self._capload[li] = 0.0
            if binding[li]:
                self._seeds.add(li)  # its other classes may rise
        if not self.flows:
            self._ops = 0.0
        self._cfree.append(c)

    def _member_rate(self, s: int) -> float:
        return 0.0 if s in self._fresh else self._c_rate[self._cls[s]]

    def _progress(self, s: int) -> tuple[float, float]:
        """(transferred, remaining) of the flow in slot s now."""
        d = self._tick(self._cls[s]) - self._v0[s]
        return self._moved0[s] + d, max(0.0, self._left0[s] - d)

    def _end(self, f: Flow, ok: bool) -> None:
        s = f.slot
        moved, left = self._progress(s)
        f._final = (moved, 0.0 if ok else left)
        c = self._cls[s]
        f._cap = self._c_cap[c]
        f.active = False
        del self.flows[s]
        self._leave(s)
        self._free.append(s)
        f.done.succeed(ok)

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

    def _sorted_on(self, li: int) -> list[int]:
        """The link's classes by cap level (kept until a class comes or goes)."""
        fl = self._sorted[li]
        if fl is None:
            fl = self._sorted[li] = sorted(self._on_link[li], key=self._c_level.__getitem__)
        return fl

    def _allocate(self) -> None:
        """Max-min fair rates after this instant's changes, re-solving only what they touch.

        R (links) starts from the binding links of the changed classes and is closed over the
        classes below their caps: such a class on R brings in every binding link it crosses
        (a class at its cap ties nothing together). The overloaded links of R are filled
        (`_fill`) with all their classes; the changed classes no link froze run at their caps.
        A class whose rate that changes and that crosses a binding link outside R, or loads a
        link outside R beyond its capacity, brings that link into R, and the solve repeats.
        Every other class keeps its rate.
        """
        touched, seeds = self._touched, self._seeds
        self._touched, self._seeds = set(), set()
        self._fresh = set()
        binding, links_of, on_link = self._binding, self._c_links, self._on_link
        cap, rate, nc, members, load = self._c_cap, self._c_rate, self._c_nc, self._c_members, self._pload
        for c in touched:
            for li in links_of[c]:
                if binding[li]:
                    seeds.add(li)
        if not touched and not seeds:
            return
        cap_of = self._pcapacity
        region: set[int] = set()
        classes = set(touched)
        frontier = list(seeds)
        while True:
            while frontier:  # close R over binding links, through classes below their caps
                li = frontier.pop()
                if li in region:
                    continue
                region.add(li)
                for c in on_link[li]:
                    if c not in classes and rate[c] != cap[c]:
                        classes.add(c)
                        for lk in links_of[c]:
                            if binding[lk] and lk not in region:
                                frontier.append(lk)
            fill = sorted(li for li in region if self._over(li))
            frozen, bound = _fill(fill, cap_of, {li: self._sorted_on(li) for li in fill}, links_of, self._c_acap,
                                  self._c_aw, self._c_level)
            changed: dict[int, float] = {}
            delta: dict[int, float] = {}
            for c in classes.union(frozen):
                n = len(members[c])
                r = frozen[c] / n if c in frozen else cap[c]
                if r == rate[c] and c not in touched:
                    continue
                if r == math.inf and region.issuperset(links_of[c]):
                    raise ValueError("unbounded flow rate: a flow has no finite link or cap")
                changed[c] = r
                d = n * r - nc[c] * rate[c]
                for li in links_of[c]:
                    if li in region:
                        continue
                    if binding[li]:
                        frontier.append(li)  # its other classes may move
                    elif d > 0:
                        delta[li] = delta.get(li, 0.0) + d
            frontier += [li for li, d in delta.items()
                         if load[li] + d > cap_of[li] * (1 + 1e-12) and self._over(li)]
            if not frontier:
                break
        for li in region:
            binding[li] = False
        for li in bound:
            binding[li] = True
        self.resolved += len(changed)
        for c, r in changed.items():
            self._set_rate(c, r)

    def _set_rate(self, c: int, r: float) -> None:
        """New per-member rate of a class (its members all counted in the loads from now)."""
        now = self.env.now
        old = self._c_rate[c]
        dt = now - self._c_t[c]
        if dt > 0:
            self._c_clock[c] += old * dt
            self._c_t[c] = now
        n = len(self._c_members[c])
        d = n * r - self._c_nc[c] * old
        links = self._c_links[c]
        if d:
            load = self._pload
            for li in links:
                load[li] += d
            self.changed_links.update(links)
        self._ops += r * self._c_opm[c] - old * self._c_opmc[c]
        self._c_nc[c] = n
        self._c_opmc[c] = self._c_opm[c]
        self._c_rate[c] = r
        self._c_ver[c] += 1
        if r > 0:
            clock = self._c_clock[c]
            if clock > self._REBASE:
                self._rebase(c)
                clock = 0.0
            if self._first_member(c) >= 0:
                heapq.heappush(self._heap, (now + (self._c_heap[c][0][0] - clock) / r, c, self._c_ver[c]))

    def _rebase(self, c: int) -> None:
        """Shift a class clock back to 0 (and its members' readings with it)."""
        shift = self._c_clock[c]
        self._c_clock[c] = 0.0
        for s in self._c_members[c]:
            self._v0[s] -= shift
        self._c_heap[c] = [(v - shift, s, k) for v, s, k in self._c_heap[c] if self._tok[s] == k]
        heapq.heapify(self._c_heap[c])

    def _record(self) -> None:
        load = np.array(self._pload)
        t = float(self.env.now)
        if self.hist_t and self.hist_t[-1] == t:
            self.hist_load[-1] = load
            self.hist_ops[-1] = self._ops
        else:
            self.hist_t.append(t)
            self.hist_load.append(load)
            self.hist_ops.append(self._ops)

    # ---- completions ------------------------------------------------------------------------
    def _first_member(self, c: int) -> int:
        """The member of class c that finishes first (-1 if none), dropping those that left."""
        heap, tok = self._c_heap[c], self._tok
        while heap:
            _, s, k = heap[0]
            if tok[s] == k and self._cls[s] == c:
                return s
            heapq.heappop(heap)
        return -1

    def _schedule_next_completion(self) -> None:
        self._timer_gen += 1
        heap, ver = self._heap, self._c_ver
        if len(heap) > 4 * len(self._c_links) + 64:
            self._heap = heap = [e for e in heap if e[2] == ver[e[1]]]
            heapq.heapify(heap)
        while heap:
            _, c, v = heap[0]
            if v == ver[c]:
                s = self._first_member(c)
                if s >= 0:
                    best = self._progress(s)[1] / self._c_rate[c]
                    ev = self.env.timeout(best)
                    ev.callbacks.append(lambda _e, gen=self._timer_gen: self._on_timer(gen))
                    return
            heapq.heappop(heap)

    def _on_timer(self, gen: int) -> None:
        if gen != self._timer_gen:
            return  # superseded by a later recomputation
        now = self.env.now
        heap, ver = self._heap, self._c_ver
        horizon = now + self._SLACK_S + 1e-12 * abs(now)
        due: list[int] = []
        later: list[tuple[float, int, int]] = []
        while heap and heap[0][0] <= horizon:
            entry = heapq.heappop(heap)
            c = entry[1]
            if entry[2] != ver[c]:
                continue
            r = self._c_rate[c]
            members = self._c_heap[c]
            ending = False
            while True:
                s = self._first_member(c)
                if s < 0:
                    break
                rem = self._progress(s)[1]
                left_s = rem / r
                # due: nothing left, or less left than the clock can still resolve at this time
                # (otherwise a flow could be rescheduled for this same instant forever)
                if not (rem <= _EPS or left_s <= 1e-9 or now + left_s <= now):
                    break
                due.append(heapq.heappop(members)[1])
                ending = True
            if s >= 0 and not ending:
                later.append(entry)  # not yet (rounding): the class keeps its place
        for entry in later:
            heapq.heappush(heap, entry)
        for s in sorted(due):
            self._end(self.flows[s], True)
        self._mark()
