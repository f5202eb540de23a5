"""Steady flows of `FluidNetwork`: flows of unlimited size at their cap (a VM's steady I/O
demand), kept as a fixed load on their links instead of in the classes.

Under max-min fairness a flow at its cap takes exactly its cap from every link it crosses, so
the other flows share what is left: a steady flow is a term of the per-link sum P (and of the
array's ops), and a change of it (a start, a stop, a move to other links) costs O(its links),
not a class's bookkeeping and re-solve. Steady flows may share a route (`route(links)`: the
hops of the VMs of one node on one CSV): moving a route (`move_route`, the CSV redirected or
back) moves all of them at O(the route's links), whatever their number. The routes of every node
move as one batch (`RouteMoves`, made ready once and applied in numpy array operations while the
routes are where they were: the same additions to each link's sums, in the same order).

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
from collections import deque
from collections.abc import Callable
from itertools import chain, compress, count, repeat
from operator import contains, eq, itemgetter
from typing import Any

import numpy as np

from cluster_sim.kernel.compiled import compiled

_TOL = 1e-12  # relative slack of the two checks (sums kept by updates drift by about 1e-16)
_R, _CAP, _W, _T0, _MOVED, _LINKS = range(6)  # a steady flow's record
_VECTOR_MOVES = 8  # routes moved together from which numpy's array operations are quicker than a loop [P]
# the same for the compiled kernel (kernel/fluid/_routes.pyx): from one route on [P] (measured on
# 800vm-8node ws2012 and ws2012r2, a CSV redirected moves 7 routes: 70 us a batch one step at a time,
# 5 us in the kernel; numpy's arrays 65 us)
_VECTOR_MOVES_COMPILED = 1


def _getter(keys: list[int]) -> Callable[[list], tuple]:
    """The items `keys` of a list, as a tuple (one key too)."""
    one = itemgetter(*keys)
    return one if len(keys) > 1 else (lambda seq: (one(seq),))


class SteadyOps:
    """Steady flows of one ops class whose ops are re-priced together (a LUN's VMs' writes), as
    `FluidNetwork.steady_ops` found them: their slots, caps, and each slot's steady token then
    (a flow that ended, or was changed or moved, has another token: the handle no longer holds)."""

    __slots__ = ("slots", "slot_arr", "k", "caps", "get", "tokens")

    def __init__(self, slots: list[int], k: int, caps: list[float], stok: list[int]):
        self.slots = slots
        self.slot_arr = np.array(slots, dtype=np.intp)  # (for the compiled re-pricing)
        self.k = k
        self.caps = np.array(caps, dtype=float)
        self.get = _getter(slots)
        self.tokens = self.get(stok)


class RouteMoves:
    """A batch of route moves, (route, hops) in order (a CSV redirected or back: the route of
    every node), from `FluidNetwork.route_moves`, applied by `FluidNetwork.move_routes` as often
    as needed (a CSV's plan kept). Made ready for array operations at its first use (`ready`,
    about half the cost of moving its routes one step at a time) and applied in arrays as long as
    the routes are where they were then: each step (a route leaving a link, or entering one) in
    order, the route it belongs to and its sign, and the links touched with the last step on each."""

    __slots__ = ("moves", "expect", "where", "get", "arrays", "routes", "news", "idx", "step", "isign", "new_idx",
                 "new_route", "links", "links_list", "last", "steps_c")

    def __init__(self, moves: list[tuple[int, tuple[int, ...]]]):
        self.moves = moves
        self.expect: list[tuple[int, ...]] | None = None  # (made ready) where each route must be
        self.steps_c: Any = None  # (made ready, and the kernel compiled) its steps for the kernel (_routes.Steps)

    def ready(self, r_hops: list[tuple[int, ...]], module: Any = None, n_links: int = 0,
              min_moves: int | None = None) -> None:
        """Made ready; with the compiled module (kernel/fluid/_routes.pyx) its steps are made there,
        the same, and held for its kernel (`steps_c`). min_moves: routes moving from which it goes
        in arrays (None: _VECTOR_MOVES_COMPILED with the module, else _VECTOR_MOVES)."""
        if min_moves is None:
            min_moves = _VECTOR_MOVES if module is None else _VECTOR_MOVES_COMPILED
        moves = self.moves
        routes = [r for r, _ in moves]
        self.where = _getter(routes)  # (the routes' items of a per-route list, in C)
        olds = self.expect = self.where(r_hops)
        if module is not None:
            self.routes, self.news, self.arrays, self.steps_c, self.links_list = module.ready(
                moves, olds, n_links, min_moves)
            self.get = None  # (the numpy path's)
            return
        news = [hops for _, hops in moves]
        if any(map(eq, news, olds)):  # (routes already where they go stay out)
            live = [(r, old, hops) for (r, hops), old in zip(moves, olds, strict=True) if hops != old]
            routes = [r for r, _, _ in live]
            news = [hops for _, _, hops in live]
            olds = tuple(old for _, old, _ in live)
        self.routes = routes
        self.get = _getter(routes) if routes else None
        self.news = news
        n = len(routes)
        # in arrays if no route comes twice and no link is both left and entered (then a link only
        # left loses flows at every step: emptied, if at all, at its last step)
        self.arrays = (n >= min_moves and len(set(routes)) == n
                       and set(chain.from_iterable(olds)).isdisjoint(chain.from_iterable(news)))
        if not self.arrays:
            return
        # the steps: each route's old links, then its new ones, route after route
        both = list(chain.from_iterable(zip(olds, news, strict=True)))
        lens = np.fromiter(map(len, both), dtype=np.intp, count=2 * n)
        self.idx = idx = np.fromiter(chain.from_iterable(both), dtype=np.intp)
        self.step = step = np.repeat(np.arange(n).repeat(2), lens)
        sign = np.ones(2 * n, dtype=np.int64)
        sign[::2] = -1
        self.isign = isign = np.repeat(sign, lens)
        on = isign > 0
        self.new_idx = idx[on]
        self.new_route = step[on]
        links, first_back = np.unique(idx[::-1], return_index=True)
        self.links = links
        self.links_list = links.tolist()
        self.last = len(idx) - 1 - first_back  # the last step on each link


class SteadyFlows:
    """Mixin of `FluidNetwork`: steady flows and routes as per-link loads, and their fall-back
    to classes."""

    _EXACT_AFTER = 1000  # updates of a sum, beyond its terms, before a re-sum adds it up exactly

    def _steady_init(self, n_links: int) -> None:
        # slot -> [route (-1: none), cap, weight, time joined, moved then, its own links]
        self._steady: dict[int, list] = {}
        self._steady_off = False  # True once they became ordinary flows (for the rest of the run)
        # (per-link numbers in numpy arrays: a batch of route moves updates them in a few array
        # operations, `move_routes`)
        self._D = np.zeros(n_links)  # steady load per link (also counted in P and capload)
        self._d_cnt = np.zeros(n_links, dtype=np.int64)  # steady flows on it (own links or routes)
        self._d_on: list[set[int]] = [set() for _ in range(n_links)]  # slots with it as their own link
        self._d_rn = np.zeros(n_links, dtype=np.int64)  # routes through it (`_routes_through`: which)
        # an upper bound of the highest cap level on each link (exact again when a check needs it)
        self._d_max = np.full(n_links, -math.inf)
        self._d_n = np.zeros(n_links, dtype=np.int64)  # updates of D since it was last summed exactly
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
        # a batch's sums applied compiled (kernel/fluid/_routes.pyx), or None: numpy's np.add.at
        c = compiled("cluster_sim.kernel.fluid._routes")
        self._routes_module = c
        self._routes_c = None if c is None else c.RouteKernel(self._d_cnt, self._P, self._capload, self._D,
                                                              self._d_max, self._d_n, self._d_rn,
                                                              self._bind_np.view(np.uint8))

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
            self._d_rn[li] += 1
        return r

    def _routes_through(self, li: int) -> list[int]:
        """The routes through link li (a scan: needed only for an exact re-sum or a stale bound)."""
        return list(compress(count(), map(contains, self._r_hops, repeat(li))))

    def _set_route_hops(self, r: int, hops: tuple[int, ...]) -> None:
        for li in self._r_hops[r]:
            self._d_rn[li] -= 1
        for li in hops:
            self._d_rn[li] += 1
        self._r_hops[r] = hops

    def _route_moves_ready(self, batch: RouteMoves) -> int:
        """`_route_moves` of a batch made ready (RouteMoves), in array operations when its routes
        are where they were and each has flows; returns how many flows moved.

        The per-link sums P, capload and D take each route's -total on the links it leaves and
        +total on those it enters with np.add.at, which adds in the order given: each link takes
        the same additions in the same order as one move at a time. An emptied link's last step
        goes after the others, with the exact zeros of `_load_out`."""
        r_hops, r_slots = self._r_hops, self._r_slots
        if not batch.moves:
            return 0
        if batch.expect is None:
            batch.ready(r_hops, self._routes_module, len(self._d_cnt))
        if not batch.arrays or batch.where(r_hops) != batch.expect:
            return self._route_moves(batch.moves)
        routes, get = batch.routes, batch.get
        if self._routes_c is not None:  # (the same, compiled: the gathering, the sums, the hops, the links to look at)
            got = self._routes_c.move(batch.steps_c, r_slots, self._r_total, self._r_max, r_hops)
            if got is None:  # (a route without flows moves its links only: one at a time)
                return self._route_moves(batch.moves)
            moved, seeds, check, grew_any = got
            self._seeds.update(seeds)
        else:
            n = np.fromiter(map(len, get(r_slots)), dtype=np.int64, count=len(routes))
            if not n.all():  # (a route without flows moves its links only: one at a time)
                return self._route_moves(batch.moves)
            tot = np.array(get(self._r_total))
            rmax = np.array(get(self._r_max))
            links = batch.links
            self._route_sums(batch, n, tot, rmax)
            self._seeds.update(links[self._bind_np[links]].tolist())
            grew = tot > 0.0
            grew_any = grew.any()
            check = batch.new_idx[grew[batch.new_route]].tolist() if grew_any else []
            moved = int(n.sum())
            deque(map(r_hops.__setitem__, routes, batch.news), maxlen=0)  # (each route's hops, in C)
        self.changed_links.update(batch.links_list)
        if grew_any:
            self._d_grew = True
            self._d_check.update(check)
        return moved

    def _route_sums(self, batch: RouteMoves, n: np.ndarray, tot: np.ndarray, rmax: np.ndarray) -> None:
        """The per-link sums of `_route_moves_ready` in numpy (np.add.at: in the order given); n,
        tot, rmax: each route's flows, their caps summed and its highest cap level."""
        idx, step = batch.idx, batch.step
        dcnt, D, capload, P, dmax, d_n = self._d_cnt, self._D, self._capload, self._P, self._d_max, self._d_n
        np.add.at(dcnt, idx, n[step] * batch.isign)
        gone = dcnt[batch.links] == 0  # (links only left: entered ones gain flows)
        val = tot[step] * batch.isign  # (-total or +total: a product by +-1 is exact)
        i_k = idx
        emptied = None
        if gone.any():  # their last step goes after the others
            emptied = batch.links[gone]
            keep = np.ones(len(idx), dtype=bool)
            keep[batch.last[gone]] = False
            i_k, val = idx[keep], val[keep]
        np.add.at(P, i_k, val)
        np.add.at(capload, i_k, val)
        np.add.at(D, i_k, val)
        np.add.at(d_n, idx, 1)
        np.add.at(self._d_rn, idx, batch.isign)
        np.maximum.at(dmax, batch.new_idx, rmax[batch.new_route])
        if emptied is not None:  # none left: exact zeros, not drift
            x = D[emptied]
            P[emptied] -= x
            capload[emptied] -= x
            D[emptied] = 0.0
            d_n[emptied] = 0
            dmax[emptied] = -math.inf

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
        capload, D, dcnt, dn, dmax = self._capload, self._D, self._d_cnt, self._d_n, self._d_max
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
                self._set_route_hops(r, hops)
                continue
            tot, level = r_total[r], r_max[r]
            for li in old:  # _load_out
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
            self._set_route_hops(r, hops)
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
        for r in self._routes_through(li):
            out |= self._r_slots[r]
        return out

    def _steady_exact(self, li: int) -> float:
        """The link's steady load for a re-sum: added up exactly again after many updates."""
        if self._d_n[li] > self._EXACT_AFTER + len(self._d_on[li]) + self._d_rn[li]:
            st = self._steady
            self._D[li] = math.fsum([st[s][_CAP] for s in self._d_on[li]]
                                    + [self._route_exact(r) for r in self._routes_through(li)])
            self._d_n[li] = 0
        return self._D.item(li)

    # ---- the check and the fall-back -------------------------------------------------------
    def _steady_holds(self) -> bool:
        """Is every steady flow at its cap still max-min (see the module docstring)?"""
        D, check = self._D, self._d_check
        if check:
            self._d_check = set()
            if self._sums_module is not None:  # (the same test, compiled)
                if self._sums_module.any_above(check, D, self.capacity, 1 + _TOL):
                    return False
            else:
                grew = np.fromiter(check, dtype=np.intp, count=len(check))
                if (D[grew] > self.capacity[grew] * (1 + _TOL)).any():
                    return False
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
