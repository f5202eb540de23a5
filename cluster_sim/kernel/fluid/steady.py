"""Steady flows of `FluidNetwork`: flows of unlimited size at their cap (a VM's steady I/O
demand), kept as a fixed load on their links instead of in the classes.

Under max-min fairness a flow at its cap takes exactly its cap from every link it crosses, so
the other flows share what is left: a steady flow is a term of the per-link sum P (and of the
array's ops), and a change of it (a start, a stop, a move to other links when its CSV is
redirected) costs O(its links), not a class's bookkeeping and re-solve. That is exact as long as
max-min would give every steady flow its cap: no link is loaded beyond its capacity by steady
flows alone, and no binding link has a water level below a steady flow's cap level (cap /
weight) on it (the bottleneck characterisation of max-min fairness; see network.py). After every
recomputation `_steady_holds` checks both; the first time either fails, every steady flow
becomes an ordinary flow (`_materialize`: it joins its class with its progress) and the
recomputation is done again, so rates are always max-min's. Steady flows keep their slots, so
slot order (the order flows ending or stopped together are ended in) is the same as if they were
ordinary flows.
"""

from __future__ import annotations

import math

_TOL = 1e-12  # relative slack of the two checks (sums kept by updates drift by about 1e-16)


class SteadyFlows:
    """Mixin of `FluidNetwork`: steady flows as per-link loads, and their fall-back to classes."""

    def _steady_init(self, n_links: int) -> None:
        self._steady: dict[int, list] = {}  # slot -> [links, cap, weight, time joined, moved then]
        self._steady_off = False  # True once they became ordinary flows (for the rest of the run)
        self._D: list[float] = [0.0] * n_links  # steady load per link (also counted in P and capload)
        self._d_on: list[set[int]] = [set() for _ in range(n_links)]  # steady slots per link
        # an upper bound of the highest cap level on each link (exact again when a check needs it)
        self._d_max: list[float] = [-math.inf] * n_links
        self._d_n: list[int] = [0] * n_links  # updates of D since it was last summed exactly
        self._d_check: set[int] = set()  # links whose steady load grew (checked against capacity)
        self._d_grew = False  # some load grew: the allocation checks for overloaded links

    # ---- the flow API's steady branch --------------------------------------------------------
    def _steady_add(self, s: int, links: tuple[int, ...], cap: float, w: float, moved: float) -> None:
        level = cap / w
        self._steady[s] = [links, cap, w, self.env.now, moved]
        P, capload, D, binding, d_on, d_max, d_n = (self._P, self._capload, self._D, self._binding, self._d_on,
                                                   self._d_max, self._d_n)
        for li in links:
            P[li] += cap
            capload[li] += cap
            D[li] += cap
            d_n[li] += 1
            d_on[li].add(s)
            if level > d_max[li]:
                d_max[li] = level
            if binding[li]:
                self._seeds.add(li)
        self._ops_base[self._k[s]] += cap * self._opm[s]
        self.changed_links.update(links)
        if cap > 0.0:
            self._d_check.update(links)
            self._d_grew = True
        self._fresh.add(s)

    def _steady_remove(self, s: int) -> list:
        rec = self._steady.pop(s)
        links, cap = rec[0], rec[1]
        P, capload, D, binding, d_on, d_n = self._P, self._capload, self._D, self._binding, self._d_on, self._d_n
        for li in links:
            on = d_on[li]
            on.discard(s)
            if on:
                P[li] -= cap
                capload[li] -= cap
                D[li] -= cap
                d_n[li] += 1
            else:  # none left: exact zeros, not drift
                P[li] -= D[li]
                capload[li] -= D[li]
                D[li] = 0.0
                d_n[li] = 0
                self._d_max[li] = -math.inf
            if binding[li]:
                self._seeds.add(li)  # its other flows may rise
        self._ops_base[self._k[s]] -= cap * self._opm[s]
        self.changed_links.update(links)
        self._fresh.discard(s)
        return rec

    def _steady_progress(self, s: int) -> tuple[float, float]:
        rec = self._steady[s]
        rate = 0.0 if s in self._fresh else rec[1]
        return rec[4] + rate * (self.env.now - rec[3]), math.inf

    _EXACT_AFTER = 1000  # updates of a link's steady load before a re-sum adds it up exactly again

    def _steady_exact(self, li: int) -> float:
        """The link's steady load for a re-sum: summed exactly after many updates (clears drift)."""
        if self._d_n[li] > self._EXACT_AFTER:
            st = self._steady
            self._D[li] = math.fsum(st[s][1] for s in self._d_on[li])
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
                dmax[b] = max((st[s][1] / st[s][2] for s in self._d_on[b]), default=-math.inf)
                if dmax[b] > plam[b] * (1 + _TOL):
                    return False
        return True

    def _materialize(self) -> None:
        """Every steady flow becomes an ordinary flow in its class, with its progress; they are
        allocated with everything else of this instant (a region solve)."""
        self._steady_off = True
        for s in sorted(self._steady):
            moved = self._steady_progress(s)[0]
            rec = self._steady_remove(s)
            self._join(s, rec[0], rec[1], rec[2], moved, math.inf)
        self._force_solve = True
