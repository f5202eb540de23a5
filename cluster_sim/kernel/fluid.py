"""Fluid resource model: links with capacities, flows with sizes and optional rate caps.

Rates are max-min fair (weighted), found by progressive filling: raise every unfrozen flow's
rate in proportion to its weight until a link saturates or a flow reaches its cap, freeze those
flows, repeat (Bertsekas & Gallager, *Data Networks*, 2nd ed., section 6.5.2). Rates are
recomputed only when a flow starts, ends or changes its cap, and at most once per simulated
instant however many flows change in it. Each flow's `done` event fires exactly once: with
True when its size has been transferred, with False when it is stopped early.

A weight lets one flow stand for n identical flows (n VMs with the same path and demand):
a flow with weight n and cap n*c receives exactly what n flows with cap c would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

from cluster_sim.kernel.instant import FLUID, InstantHooks

_EPS = 1e-9


def _water_fill(residual: dict[int, float], flows_on: dict[int, list[int]], links_of: Any,
                cap: Any, weight: Any, level: Any) -> dict[int, float]:
    """Progressive filling restricted to overloaded links (see `_progressive_fill`).

    residual: capacity of each overloaded link; flows_on: its flows, sorted by cap level
    (cap / weight); links_of[j]: the links flow j crosses (others than the overloaded ones are
    ignored); cap, weight, level: per flow. Returns the rate of each flow a link froze below or
    at its cap; every other flow runs at its cap. Plain Python: a few links, tens of flows.
    """
    residual = dict(residual)
    frozen: dict[int, float] = {}
    open_links = set(residual)
    while open_links:
        best, best_o = math.inf, -1
        for o in list(open_links):
            room = max(residual[o], 0.0)
            wsum = 0.0
            for j in flows_on[o]:
                if j not in frozen:
                    wsum += weight[j]
            if wsum <= 0.0:
                open_links.discard(o)
                continue
            for j in flows_on[o]:  # ascending cap level: who reaches the cap before the link fills
                if j in frozen:
                    continue
                lam = room / wsum
                if lam <= level[j]:
                    break
                room -= cap[j]
                wsum -= weight[j]
            else:
                # every open flow fits at its cap, and frozen flows only ever give capacity back:
                # this link never saturates
                open_links.discard(o)
                continue
            if lam < best:
                best, best_o = lam, o
        if best_o < 0:
            break
        open_links.discard(best_o)
        for j in flows_on[best_o]:
            if j in frozen:
                continue
            r = min(cap[j], weight[j] * best)
            frozen[j] = r
            for o in links_of[j]:
                if o in residual:
                    residual[o] -= r
    for fl in flows_on.values():
        for j in fl:
            if j not in frozen and cap[j] == math.inf:
                raise ValueError("unbounded flow rate: a flow has no finite link or cap")
    return frozen


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
    """A handle on one flow. Its numbers live in the network's arrays while it runs."""

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
        return float(self.net._rate[self.slot]) if self.active else 0.0

    @property
    def transferred(self) -> float:
        if not self.active:
            return self._final[0]
        self.net._advance()  # bring the books up to now
        return float(self.net._moved[self.slot])

    @property
    def remaining(self) -> float:
        if not self.active:
            return self._final[1]
        self.net._advance()
        return float(self.net._remaining[self.slot])

    @property
    def cap(self) -> float:
        return float(self.net._cap[self.slot]) if self.active else self._cap


class FluidNetwork:
    """Links and flows in a SimPy environment, with a recorded utilisation history.

    Flows occupy slots of persistent numpy arrays (incidence, caps, weights, rates, remaining
    sizes), so a recomputation costs a few vector operations whatever the number of flows.
    """

    def __init__(self, env: simpy.Environment, capacities: dict[str, float], hooks: InstantHooks | None = None,
                 ops_classes: int = 1):
        self.env = env
        self.ops_classes = max(1, int(ops_classes))  # back-end I/O ops are summed per class (array controller)
        self.hooks = hooks or InstantHooks(env)
        self.link_names = list(capacities)
        self.lidx = {n: i for i, n in enumerate(self.link_names)}
        self.capacity = np.array([capacities[n] for n in self.link_names], dtype=float)
        n_links = len(self.link_names)
        size = 64
        self._inc = np.zeros((n_links, size), dtype=bool)
        self._cap = np.full(size, np.inf)
        self._w = np.ones(size)
        self._opm = np.zeros(size)
        self._cls = np.zeros(size, dtype=np.intp)
        self._rate = np.zeros(size)
        self._remaining = np.zeros(size)
        self._moved = np.zeros(size)
        self._alive = np.zeros(size, dtype=bool)
        self._free: list[int] = list(range(size - 1, -1, -1))
        # the same facts as plain Python objects, kept up to date flow by flow for the allocation:
        # per slot its links, cap, weight and cap level; per link its flows and the sum of their
        # finite caps (re-summed exactly whenever the link is near or over its capacity)
        self._links_of: list[tuple[int, ...]] = [()] * size
        self._pcap: list[float] = [math.inf] * size
        self._pw: list[float] = [1.0] * size
        self._plevel: list[float] = [math.inf] * size
        self._on_link: list[set[int]] = [set() for _ in range(n_links)]
        self._capload: list[float] = [0.0] * n_links
        self._uncapped: list[int] = [0] * n_links
        self._pcapacity: list[float] = self.capacity.tolist()
        self.flows: dict[int, Flow] = {}  # slot -> flow
        self._next_id = 0
        self._last_advance = env.now
        self._dirty = False
        self._timer_gen = 0
        self.recomputes = 0
        # history of piecewise-constant state: (time, link loads (L,), array back-end ops/s)
        self.hist_t: list[float] = []
        self.hist_load: list[np.ndarray] = []
        self.hist_ops: list[float] = []
        self.hist_ops_class: list[np.ndarray] = []  # per recorded state: ops/s per class
        self.listeners: list[Callable[[], None]] = []  # called after every recomputation
        self._record()

    # ---- public API -----------------------------------------------------------------------
    def link(self, name: str) -> int:
        return self.lidx[name]

    def _grow(self) -> None:
        old = self._cap.shape[0]
        new = old * 2
        self._inc = np.hstack([self._inc, np.zeros((self._inc.shape[0], old), dtype=bool)])
        self._cap = np.concatenate([self._cap, np.full(old, np.inf)])
        self._w = np.concatenate([self._w, np.ones(old)])
        self._cls = np.concatenate([self._cls, np.zeros(old, dtype=np.intp)])
        for name in ("_opm", "_rate", "_remaining", "_moved"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(old)]))
        self._alive = np.concatenate([self._alive, np.zeros(old, dtype=bool)])
        self._free.extend(range(new - 1, old - 1, -1))
        self._links_of += [()] * old
        self._pcap += [math.inf] * old
        self._pw += [1.0] * old
        self._plevel += [math.inf] * old

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
        link_idx = [self.lidx[n] for n in links]  # KeyError for an unknown link, before any change
        cap = math.inf if cap_mib_s is None else float(cap_mib_s)
        if cap < 0:
            raise ValueError("flow cap must be >= 0")
        if not link_idx and not math.isfinite(cap):
            raise ValueError("a flow with no links must have a rate cap")
        self._advance()
        fid = self._next_id
        self._next_id += 1
        if size_mib <= 0:
            f = Flow(fid, -1, self, 0.0, tag, self.env.event(), self.env.now, cap)
            f.active = False
            f.done.succeed(True)
            return f
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._inc[:, slot] = False
        self._inc[link_idx, slot] = True
        self._cap[slot] = cap
        self._w[slot] = float(weight)
        self._opm[slot] = float(ops_per_mib)
        self._cls[slot] = int(ops_class)
        self._rate[slot] = 0.0
        self._remaining[slot] = float(size_mib)
        self._moved[slot] = 0.0
        self._alive[slot] = True
        self._links_of[slot] = tuple(link_idx)
        for li in link_idx:
            self._on_link[li].add(slot)
        self._mirror_cap(slot, cap, float(weight))
        f = Flow(fid, slot, self, float(size_mib), tag, self.env.event(), self.env.now, cap)
        self.flows[slot] = f
        self._mark()
        return f

    def _mirror_cap(self, slot: int, cap: float, weight: float) -> None:
        """Record the slot's cap and weight and add its cap to its links' capped load."""
        self._pcap[slot] = cap
        self._pw[slot] = weight
        self._plevel[slot] = cap / weight
        self._count_cap(slot, +1)

    def _unmirror_cap(self, slot: int) -> None:
        """Take the slot's recorded cap out of its links' capped load."""
        self._count_cap(slot, -1)

    def _count_cap(self, slot: int, sign: int) -> None:
        cap = self._pcap[slot]
        for li in self._links_of[slot]:
            if cap == math.inf:
                self._uncapped[li] += sign
            else:
                self._capload[li] += sign * cap

    def _end(self, f: Flow, ok: bool) -> None:
        s = f.slot
        f._final = (float(self._moved[s]), 0.0 if ok else float(self._remaining[s]))
        f._cap = float(self._cap[s])
        f.active = False
        self._alive[s] = False
        self._rate[s] = 0.0
        self._unmirror_cap(s)
        for li in self._links_of[s]:
            self._on_link[li].discard(s)
        self._links_of[s] = ()
        del self.flows[s]
        self._free.append(s)
        f.done.succeed(ok)

    def stop(self, flow: Flow) -> None:
        """End a flow early (a crash, a steady demand that changes); `done` fires with False."""
        if not flow.active:
            return
        self._advance()
        self._end(flow, False)
        self._mark()

    def stop_flows_on(self, links: list[str]) -> list[Flow]:
        """Stop every flow crossing any of these links (a host died); returns them."""
        rows = [self.lidx[n] for n in links if n in self.lidx]
        if not rows:
            return []
        hit = self._alive & self._inc[rows].any(axis=0)
        flows = [self.flows[i] for i in np.flatnonzero(hit).tolist()]
        for f in flows:
            self.stop(f)
        return flows

    def reroute(self, flow: Flow, links: list[str] | tuple[str, ...]) -> None:
        """Move a live flow onto other links; its size, progress, cap, weight and ops stay."""
        if not flow.active:
            return
        link_idx = [self.lidx[n] for n in links]
        self._advance()
        s = flow.slot
        self._unmirror_cap(s)
        for li in self._links_of[s]:
            self._on_link[li].discard(s)
        self._inc[:, s] = False
        self._inc[link_idx, s] = True
        self._links_of[s] = tuple(link_idx)
        for li in link_idx:
            self._on_link[li].add(s)
        self._mirror_cap(s, self._pcap[s], self._pw[s])
        self._mark()

    def set_cap(self, flow: Flow, cap_mib_s: float | None, weight: float | None = None) -> None:
        if not flow.active:
            return
        self._advance()
        s = flow.slot
        self._unmirror_cap(s)
        self._cap[s] = math.inf if cap_mib_s is None else float(cap_mib_s)
        if weight is not None:
            self._w[s] = float(weight)
        self._mirror_cap(s, float(self._cap[s]), float(self._w[s]))
        self._mark()

    def set_ops(self, flow: Flow, ops_per_mib: float) -> None:
        if not flow.active or self._opm[flow.slot] == ops_per_mib:
            return
        self._advance()
        self._opm[flow.slot] = float(ops_per_mib)
        self._mark()

    def set_capacity(self, link: str, mib_s: float) -> None:
        """Change a link's capacity from now on (a slowed backup target, a failed array controller);
        the flows crossing it are shared out again at the end of this instant."""
        if not mib_s > 0:
            raise ValueError("link capacity must be > 0")
        i = self.lidx[link]
        self._advance()
        self.capacity[i] = float(mib_s)  # in place: readers of `capacity` see the change
        self._pcapacity[i] = float(mib_s)
        self._mark()

    def settle_now(self) -> None:
        """Allocate now any change pending for the end of this instant (for a measurement)."""
        if self._dirty:
            self._recompute()

    def link_load(self) -> dict[str, float]:
        return dict(zip(self.link_names, self._load().tolist(), strict=True))

    # ---- internals --------------------------------------------------------------------------
    def _load(self) -> np.ndarray:
        idx = np.flatnonzero(self._alive)
        if not len(idx):
            return np.zeros(len(self.link_names))
        return self._inc[:, idx].astype(float) @ self._rate[idx]

    def _advance(self) -> None:
        dt = self.env.now - self._last_advance
        if dt > 0:
            moved = self._rate * dt  # dead slots have rate 0
            self._moved += moved
            self._remaining = np.maximum(0.0, self._remaining - moved)
        self._last_advance = self.env.now

    def _mark(self) -> None:
        # All flows starting or ending at this instant are allocated together, once.
        if not self._dirty:
            self._dirty = True
            self.hooks.request(FLUID, self._recompute)

    def _recompute(self) -> None:
        self._dirty = False
        self._advance()
        self.recomputes += 1
        self._allocate()
        self._record()
        for fn in self.listeners:
            fn()
        self._schedule_next_completion()

    def _allocate(self) -> None:
        """Max-min fair rates for the live flows (as `_progressive_fill`, from the Python mirrors)."""
        over: list[int] = []
        capacity, capload, on_link, pcap = self._pcapacity, self._capload, self._on_link, self._pcap
        for li, c in enumerate(capacity):
            if self._uncapped[li]:
                over.append(li)
            elif capload[li] > c * (1 - 1e-9):  # near or over: sum exactly, which also clears drift
                capload[li] = math.fsum(pcap[s] for s in on_link[li])
                if capload[li] > c:
                    over.append(li)
        np.copyto(self._rate, self._cap, where=self._alive)  # every flow at its cap...
        if not over:
            return
        level = self._plevel
        flows_on = {li: sorted(on_link[li], key=level.__getitem__) for li in over}
        frozen = _water_fill({li: capacity[li] for li in over}, flows_on, self._links_of, pcap, self._pw, level)
        if frozen:  # ...but those a saturated link holds back
            self._rate[list(frozen)] = list(frozen.values())

    def _record(self) -> None:
        idx = np.flatnonzero(self._alive)
        if len(idx):
            load = self._inc[:, idx].astype(float) @ self._rate[idx]
            flow_ops = self._rate[idx] * self._opm[idx]
            ops = float(flow_ops.sum())
            by_class = np.bincount(self._cls[idx], weights=flow_ops, minlength=self.ops_classes)
        else:
            load, ops = np.zeros(len(self.link_names)), 0.0
            by_class = np.zeros(self.ops_classes)
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

    def _schedule_next_completion(self) -> None:
        self._timer_gen += 1
        live = self._alive & (self._rate > 0) & np.isfinite(self._remaining)
        if live.any():
            best = float((self._remaining[live] / self._rate[live]).min())
            gen = self._timer_gen
            ev = self.env.timeout(best)
            ev.callbacks.append(lambda _e: self._on_timer(gen))

    def _on_timer(self, gen: int) -> None:
        if gen != self._timer_gen:
            return  # superseded by a later recomputation
        self._advance()
        rem = self._remaining
        now = self.env.now
        with np.errstate(divide="ignore", invalid="ignore"):
            left_s = rem / np.where(self._rate > 0, self._rate, 1.0)
            # due: nothing left, or less left than the clock can still resolve at this time
            # (otherwise a flow could be rescheduled for this same instant forever)
            due = self._alive & np.isfinite(rem) & (
                (rem <= _EPS) | ((self._rate > 0) & ((left_s <= 1e-9) | (now + left_s <= now)))
            )
        for slot in np.flatnonzero(due).tolist():
            self._end(self.flows[slot], True)
        self._mark()
