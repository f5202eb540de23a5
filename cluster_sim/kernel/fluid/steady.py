"""Steady flows of `FluidNetwork`: flows of unlimited size at their cap (a VM's steady I/O
demand), kept as a fixed load on their links instead of in the classes.

Under max-min fairness a flow at its cap takes exactly its cap from every link it crosses, so
the other flows share what is left: a steady flow is a term of the per-link sum P (and of the
array's ops), and a change of it (a start, a stop, a move to other links) costs O(its links),
not a class's bookkeeping and re-solve. Steady flows may share a route (`route(links)`: the
hops of the VMs of one node on one CSV): moving a route (`move_route`, the CSV redirected or
back) moves all of them at O(the route's links), whatever their number.

That is exact as long as max-min would give every steady flow its cap: no link is loaded beyond
its capacity by steady flows alone, and no binding link has a water level below a steady flow's
cap level (cap / weight) on it (the bottleneck characterisation of max-min fairness; see
network.py). After every recomputation `_steady_holds` checks both; the first time either
fails, every steady flow becomes an ordinary flow (`_materialize`: it joins its class with its
progress) and the recomputation is done again, so rates are always max-min's. Steady flows keep
their slots, so slot order (the order flows ending or stopped together are ended in) is the same
as if they were ordinary flows.
"""

from __future__ import annotations

import math
from operator import itemgetter

import numpy as np

_TOL = 1e-12  # relative slack of the two checks (sums kept by updates drift by about 1e-16)
_R, _CAP, _W, _T0, _MOVED, _LINKS = range(6)  # a steady flow's record


class SteadyOps:
    """Steady flows of one ops class whose ops are re-priced together (a LUN's VMs' writes), as
    `FluidNetwork.steady_ops` found them: their slots, caps, and each slot's steady token then
    (a flow that ended, or was changed or moved, has another token: the handle no longer holds)."""

    __slots__ = ("slots", "k", "caps", "get", "tokens")

    def __init__(self, slots: list[int], k: int, caps: list[float], stok: list[int]):
        self.slots = slots
        self.k = k
        self.caps = np.array(caps, dtype=float)
        one = itemgetter(*slots)
        self.get = one if len(slots) > 1 else (lambda seq: (one(seq),))  # (a tuple either way)
        self.tokens = self.get(stok)


class SteadyFlows:
    """Mixin of `FluidNetwork`: steady flows and routes as per-link loads, and their fall-back
    to classes."""

    _EXACT_AFTER = 1000  # updates of a sum, beyond its terms, before a re-sum adds it up exactly

    def _steady_init(self, n_links: int) -> None:
        # slot -> [route (-1: none), cap, weight, time joined, moved then, its own links]
        self._steady: dict[int, list] = {}
        self._steady_off = False  # True once they became ordinary flows (for the rest of the run)
        self._D: list[float] = [0.0] * n_links  # steady load per link (also counted in P and capload)
        self._d_cnt: list[int] = [0] * n_links  # steady flows on it (own links or routes)
        self._d_on: list[set[int]] = [set() for _ in range(n_links)]  # slots with it as their own link
        self._d_routes: list[set[int]] = [set() for _ in range(n_links)]  # routes through it
        # an upper bound of the highest cap level on each link (exact again when a check needs it)
        self._d_max: list[float] = [-math.inf] * n_links
        self._d_n: list[int] = [0] * n_links  # updates of D since it was last summed exactly
        self._d_check: set[int] = set()  # links whose steady load grew (checked against capacity)
        self._d_grew = False  # some load grew: the allocation checks for overloaded links
        # routes: hops, members, their caps summed, highest cap level (bound), updates of the sum
        self._r_hops: list[tuple[int, ...]] = []
        self._r_slots: list[set[int]] = []
        self._r_total: list[float] = []
        self._r_max: list[float] = []
        self._r_n: list[int] = []
        # once steady flows are ordinary flows: those that follow a route, and their own links
        self._r_plain: list[set[int]] = []
        self._plain_route: dict[int, tuple[int, tuple[int, ...]]] = {}

    # ---- routes ----------------------------------------------------------------------------
    def _route_new(self, hops: tuple[int, ...]) -> int:
        r = len(self._r_hops)
        self._r_hops.append(hops)
        self._r_slots.append(set())
        self._r_total.append(0.0)
        self._r_max.append(-math.inf)
        self._r_n.append(0)
        self._r_plain.append(set())
        for li in hops:
            self._d_routes[li].add(r)
        return r

    def _route_move(self, r: int, hops: tuple[int, ...]) -> int:
        """Move route r and its flows; returns how many flows moved."""
        return self._route_moves([(r, hops)])

    def _route_moves(self, moves: list[tuple[int, tuple[int, ...]]]) -> int:
        """`_route_move` for each (route, hops) in order (a CSV redirected or back: a route per
        node), with the per-link updates of `_load_out` and `_load_in` written out in one loop and
        the numpy sum P updated once at the end (np.add.at adds in the order given, so each
        link's P takes the same additions in the same order as one move at a time). Returns how
        many flows moved."""
        r_hops, r_slots, r_total, r_max = self._r_hops, self._r_slots, self._r_total, self._r_max
        d_routes, capload, D, dcnt, dn, dmax = self._d_routes, self._capload, self._D, self._d_cnt, self._d_n, self._d_max
        binding, seeds, dcheck, changed = self._binding, self._seeds, self._d_check, self.changed_links
        p_idx: list[int] = []
        p_add: list[float] = []
        moved = 0
        for r, hops in moves:
            old = r_hops[r]
            if hops == old:
                continue
            members = r_slots[r]
            n = len(members)
            if not n:
                for li in old:
                    d_routes[li].discard(r)
                for li in hops:
                    d_routes[li].add(r)
                r_hops[r] = hops
                continue
            tot, level = r_total[r], r_max[r]
            for li in old:  # _load_out
                d_routes[li].discard(r)
                cnt = dcnt[li] - n
                dcnt[li] = cnt
                p_idx.append(li)
                if cnt:
                    p_add.append(-tot)
                    capload[li] -= tot
                    D[li] -= tot
                    dn[li] += 1
                else:  # none left: exact zeros, not drift
                    x = D[li]
                    p_add.append(-x)
                    capload[li] -= x
                    D[li] = 0.0
                    dn[li] = 0
                    dmax[li] = -math.inf
                if binding[li]:
                    seeds.add(li)
            for li in hops:  # _load_in
                d_routes[li].add(r)
                p_idx.append(li)
                p_add.append(tot)
                capload[li] += tot
                D[li] += tot
                dcnt[li] += n
                dn[li] += 1
                if level > dmax[li]:
                    dmax[li] = level
                if binding[li]:
                    seeds.add(li)
                if tot > 0.0:
                    dcheck.add(li)
            r_hops[r] = hops
            changed.update(old)
            changed.update(hops)
            if tot > 0.0:
                self._d_grew = True
            moved += n
        if p_idx:
            np.add.at(self._P, p_idx, p_add)
        return moved

    def _on_route(self, s: int, r: int, own: tuple[int, ...]) -> None:
        """Ordinary flow s follows route r (its links: the route's, then `own`)."""
        self._plain_route[s] = (r, own)
        self._r_plain[r].add(s)

    def _off_route(self, s: int) -> None:
        got = self._plain_route.pop(s, None)
        if got is not None:
            self._r_plain[got[0]].discard(s)

    def _route_exact(self, r: int) -> float:
        if self._r_n[r] > self._EXACT_AFTER + len(self._r_slots[r]):
            st = self._steady
            self._r_total[r] = math.fsum(st[s][_CAP] for s in self._r_slots[r])
            self._r_n[r] = 0
        return self._r_total[r]

    # ---- per-link sums ---------------------------------------------------------------------
    # (_route_moves writes these two out in its loop, with P added at its end: keep them alike)
    def _load_in(self, li: int, x: float, n: int, level: float) -> None:
        self._P[li] += x
        self._capload[li] += x
        self._D[li] += x
        self._d_cnt[li] += n
        self._d_n[li] += 1
        if level > self._d_max[li]:
            self._d_max[li] = level
        if self._binding[li]:
            self._seeds.add(li)
        if x > 0.0:
            self._d_check.add(li)

    def _load_out(self, li: int, x: float, n: int) -> None:
        cnt = self._d_cnt[li] - n
        self._d_cnt[li] = cnt
        if cnt:
            self._P[li] -= x
            self._capload[li] -= x
            self._D[li] -= x
            self._d_n[li] += 1
        else:  # none left: exact zeros, not drift
            self._P[li] -= self._D[li]
            self._capload[li] -= self._D[li]
            self._D[li] = 0.0
            self._d_n[li] = 0
            self._d_max[li] = -math.inf
        if self._binding[li]:
            self._seeds.add(li)  # its other flows may rise

    # ---- the flow API's steady branch --------------------------------------------------------
    def _steady_add(self, s: int, links: tuple[int, ...], cap: float, w: float, moved: float,
                    route: int = -1) -> None:
        """Slot s runs steady on `links` (its own), plus the route's hops if route >= 0."""
        level = cap / w
        self._steady[s] = [route, cap, w, self.env.now, moved, links]
        self._stok[s] += 1
        for li in links:
            self._d_on[li].add(s)
            self._load_in(li, cap, 1, level)
        if route >= 0:
            self._r_slots[route].add(s)
            self._r_total[route] += cap
            self._r_n[route] += 1
            if level > self._r_max[route]:
                self._r_max[route] = level
            hops = self._r_hops[route]
            for li in hops:
                self._load_in(li, cap, 1, level)
            self.changed_links.update(hops)
        self._ops_base[self._k[s]] += cap * self._opm[s]
        self.changed_links.update(links)
        if cap > 0.0:
            self._d_grew = True
        self._fresh.add(s)

    def _steady_remove(self, s: int) -> list:
        rec = self._steady.pop(s)
        self._stok[s] += 1
        route, cap, links = rec[_R], rec[_CAP], rec[_LINKS]
        for li in links:
            self._d_on[li].discard(s)
            self._load_out(li, cap, 1)
        if route >= 0:
            members = self._r_slots[route]
            members.discard(s)
            if members:
                self._r_total[route] -= cap
                self._r_n[route] += 1
            else:
                self._r_total[route], self._r_n[route], self._r_max[route] = 0.0, 0, -math.inf
            hops = self._r_hops[route]
            for li in hops:
                self._load_out(li, cap, 1)
            self.changed_links.update(hops)
        self._ops_base[self._k[s]] -= cap * self._opm[s]
        self.changed_links.update(links)
        self._fresh.discard(s)
        return rec

    def _steady_links(self, s: int) -> tuple[int, ...]:
        rec = self._steady[s]
        return rec[_LINKS] if rec[_R] < 0 else self._r_hops[rec[_R]] + rec[_LINKS]

    def _steady_progress(self, s: int) -> tuple[float, float]:
        rec = self._steady[s]
        rate = 0.0 if s in self._fresh else rec[_CAP]
        return rec[_MOVED] + rate * (self.env.now - rec[_T0]), math.inf

    def _steady_slots_on(self, li: int) -> set[int]:
        out = set(self._d_on[li])
        for r in self._d_routes[li]:
            out |= self._r_slots[r]
        return out

    def _steady_exact(self, li: int) -> float:
        """The link's steady load for a re-sum: added up exactly again after many updates."""
        if self._d_n[li] > self._EXACT_AFTER + len(self._d_on[li]) + len(self._d_routes[li]):
            st = self._steady
            self._D[li] = math.fsum([st[s][_CAP] for s in self._d_on[li]]
                                    + [self._route_exact(r) for r in self._d_routes[li]])
            self._d_n[li] = 0
        return self._D[li]

    # ---- the check and the fall-back -------------------------------------------------------
    def _steady_holds(self) -> bool:
        """Is every steady flow at its cap still max-min (see the module docstring)?"""
        D, cap = self._D, self._pcapacity
        for li in self._d_check:
            if D[li] > cap[li] * (1 + _TOL):
                self._d_check = set()
                return False
        self._d_check = set()
        dmax, plam = self._d_max, self._plam
        for b in self._blist:
            if dmax[b] > plam[b] * (1 + _TOL):
                st = self._steady  # the bound may be stale: the highest level now
                dmax[b] = max((st[s][_CAP] / st[s][_W] for s in self._steady_slots_on(b)), default=-math.inf)
                if dmax[b] > plam[b] * (1 + _TOL):
                    return False
        return True

    def _materialize(self) -> None:
        """Every steady flow becomes an ordinary flow in its class, with its progress; they are
        allocated with everything else of this instant (a region solve)."""
        self._steady_off = True
        for s in sorted(self._steady):
            moved = self._steady_progress(s)[0]
            links = self._steady_links(s)
            rec = self._steady_remove(s)
            if rec[_R] >= 0:
                self._on_route(s, rec[_R], rec[_LINKS])
            self._join(s, links, rec[_CAP], rec[_W], moved, math.inf)
        self._force_solve = True
