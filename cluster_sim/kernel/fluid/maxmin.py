"""Weighted max-min fair rates by progressive filling (Bertsekas & Gallager, *Data Networks*,
2nd ed., section 6.5.2), as pure functions: the full solve `max_min_fair` (the reference the
tests compare the incremental `FluidNetwork` with) and `_fill`, which `FluidNetwork` uses to
re-solve a region of links."""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np


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
