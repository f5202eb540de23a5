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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from cluster_sim.kernel.instant import FLUID, InstantHooks

_EPS = 1e-9


def _progressive_fill(
    cap_links: np.ndarray, inc: np.ndarray, caps: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Weighted max-min fair rates.

    cap_links: (L,) link capacities; inc: (L, F) bool incidence; caps: (F,) rate caps (inf = none);
    weights: (F,) positive weights. Returns (F,) rates.
    """
    n_flows = inc.shape[1]
    rate = np.zeros(n_flows)
    if n_flows == 0:
        return rate
    incf = inc.astype(float)
    active = np.ones(n_flows, dtype=bool)
    residual = cap_links.astype(float).copy()
    has_link = inc.any(axis=0)
    if np.any(~has_link & ~np.isfinite(caps)):
        raise ValueError("a flow with no links must have a rate cap")
    while active.any():
        w_active = weights * active
        load_w = incf @ w_active  # sum of active weights per link
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(load_w > _EPS, np.maximum(residual, 0.0) / load_w, np.inf)
        link_level = np.where(inc, share[:, None], np.inf).min(axis=0) if inc.shape[0] else np.full(n_flows, np.inf)
        cap_level = (caps - rate) / weights
        level = np.minimum(link_level, cap_level)
        step = level[active].min()
        if not np.isfinite(step):
            raise ValueError("unbounded flow rate: a flow has no finite link or cap")
        step = max(step, 0.0)
        rate = rate + weights * step * active
        residual = residual - incf @ (weights * step * active)
        saturated = residual <= _EPS * np.maximum(cap_links, 1.0)
        frozen = np.isfinite(cap_level) & ((cap_level - step) <= _EPS * np.maximum(np.abs(caps), 1.0))
        if saturated.any():
            frozen |= inc[saturated].any(axis=0)
        newly = active & frozen
        if not newly.any():  # numerical safety: freeze the flows at the minimum level
            newly = active & (level <= step + _EPS)
        active &= ~newly
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


@dataclass(eq=False)
class Flow:
    fid: int
    links: tuple[int, ...]
    size: float  # MiB; inf for a steady demand
    cap: float  # MiB/s; inf for none
    weight: float
    tag: Any
    ops_per_mib: float  # array back-end I/Os per MiB carried (for IOPS utilisation)
    done: simpy.Event
    remaining: float = 0.0
    rate: float = 0.0
    started_s: float = 0.0
    transferred: float = 0.0
    active: bool = True
    meta: dict[str, Any] = field(default_factory=dict)


class FluidNetwork:
    """Links and flows in a SimPy environment, with a recorded utilisation history."""

    def __init__(self, env: simpy.Environment, capacities: dict[str, float], hooks: InstantHooks | None = None):
        self.env = env
        self.hooks = hooks or InstantHooks(env)
        self.link_names = list(capacities)
        self.lidx = {n: i for i, n in enumerate(self.link_names)}
        self.capacity = np.array([capacities[n] for n in self.link_names], dtype=float)
        self.flows: dict[int, Flow] = {}
        self._next_id = 0
        self._last_advance = env.now
        self._dirty = False
        self._timer_gen = 0
        self.recomputes = 0
        # history of piecewise-constant state: (time, link loads (L,), array back-end ops/s)
        self.hist_t: list[float] = []
        self.hist_load: list[np.ndarray] = []
        self.hist_ops: list[float] = []
        self.hist_rates: list[dict[int, float]] = []
        self.keep_rates = False
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
        self._advance()
        f = Flow(
            fid=self._next_id,
            links=tuple(self.lidx[n] for n in links),
            size=float(size_mib),
            cap=math.inf if cap_mib_s is None else float(cap_mib_s),
            weight=float(weight),
            tag=tag,
            ops_per_mib=float(ops_per_mib),
            done=self.env.event(),
            remaining=float(size_mib),
            started_s=self.env.now,
        )
        self._next_id += 1
        if f.size <= 0:
            f.active = False
            f.done.succeed(True)
            return f
        self.flows[f.fid] = f
        self._mark()
        return f

    def stop(self, flow: Flow) -> None:
        """End a flow early (a crash, a steady demand that changes); `done` fires with False."""
        if not flow.active:
            return
        self._advance()
        flow.active = False
        del self.flows[flow.fid]
        flow.done.succeed(False)
        self._mark()

    def set_cap(self, flow: Flow, cap_mib_s: float | None, weight: float | None = None) -> None:
        if not flow.active:
            return
        self._advance()
        flow.cap = math.inf if cap_mib_s is None else float(cap_mib_s)
        if weight is not None:
            flow.weight = float(weight)
        self._mark()

    def set_ops(self, flow: Flow, ops_per_mib: float) -> None:
        if not flow.active or flow.ops_per_mib == ops_per_mib:
            return
        self._advance()
        flow.ops_per_mib = float(ops_per_mib)
        self._mark()

    def settle_now(self) -> None:
        """Allocate now any change pending for the end of this instant (for a measurement)."""
        if self._dirty:
            self._recompute()

    def link_load(self) -> dict[str, float]:
        load = np.zeros(len(self.link_names))
        for f in self.flows.values():
            for li in f.links:
                load[li] += f.rate
        return dict(zip(self.link_names, load.tolist(), strict=True))

    # ---- internals --------------------------------------------------------------------------
    def _advance(self) -> None:
        dt = self.env.now - self._last_advance
        if dt > 0:
            for f in self.flows.values():
                if f.rate > 0:
                    moved = f.rate * dt
                    f.transferred += moved
                    if math.isfinite(f.remaining):
                        f.remaining = max(0.0, f.remaining - moved)
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
        flows = list(self.flows.values())
        n = len(flows)
        if n:
            inc = np.zeros((len(self.link_names), n), dtype=bool)
            for j, f in enumerate(flows):
                inc[list(f.links), j] = True
            caps = np.array([f.cap for f in flows])
            weights = np.array([f.weight for f in flows])
            rates = _progressive_fill(self.capacity, inc, caps, weights)
            for f, r in zip(flows, rates, strict=True):
                f.rate = float(r)
        self._record()
        for fn in self.listeners:
            fn()
        self._schedule_next_completion()

    def _record(self) -> None:
        load = np.zeros(len(self.link_names))
        ops = 0.0
        for f in self.flows.values():
            if f.rate > 0:
                load[list(f.links)] += f.rate
                ops += f.rate * f.ops_per_mib
        t = float(self.env.now)
        if self.hist_t and self.hist_t[-1] == t:
            self.hist_load[-1] = load
            self.hist_ops[-1] = ops
            if self.keep_rates:
                self.hist_rates[-1] = {f.fid: f.rate for f in self.flows.values()}
        else:
            self.hist_t.append(t)
            self.hist_load.append(load)
            self.hist_ops.append(ops)
            if self.keep_rates:
                self.hist_rates.append({f.fid: f.rate for f in self.flows.values()})

    def _schedule_next_completion(self) -> None:
        self._timer_gen += 1
        best = math.inf
        for f in self.flows.values():
            if math.isfinite(f.remaining) and f.rate > 0:
                best = min(best, f.remaining / f.rate)
        if math.isfinite(best):
            self.env.process(self._completion_timer(self._timer_gen, best))

    def _completion_timer(self, gen: int, delay: float):  # type: ignore[no-untyped-def]
        yield self.env.timeout(delay)
        if gen != self._timer_gen:
            return  # superseded by a later recomputation
        self._advance()
        finished = [
            f
            for f in self.flows.values()
            if math.isfinite(f.remaining) and (f.remaining <= _EPS * max(1.0, f.size) or (f.rate > 0 and f.remaining / f.rate <= 1e-9))
        ]
        for f in finished:
            f.remaining = 0.0
            f.active = False
            del self.flows[f.fid]
            f.done.succeed(True)
        self._mark()
