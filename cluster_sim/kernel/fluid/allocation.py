"""The recomputation of `FluidNetwork` after the changes of an instant: by the saturation
equations of the binding links when every class keeps its state, else by re-solving the region
of binding links the change touches (see the `FluidNetwork` docstring)."""

from __future__ import annotations

import heapq
import math

import numpy as np

from cluster_sim.kernel.fluid.classes import _CAPPED, _NEW
from cluster_sim.kernel.fluid.maxmin import _fill


class Allocation:
    """Mixin of `FluidNetwork`: `_allocate` and the two ways it has."""

    _FAST_LIMIT = 1000  # level updates of a binding link by sums before they are redone exactly

    def _over(self, li: int) -> bool:
        """Would the link's flows at their caps exceed its capacity (only such links ever bind)?"""
        if self._uncapped[li]:
            return True
        c, capload = self._pcapacity[li], self._capload[li]
        if capload > c * (1 + 1e-9):
            return True
        if capload > c * (1 - 1e-9):  # near: sum exactly, which also clears drift
            capload = math.fsum([self._c_acap[k] for k in self._on_link[li]] + [self._steady_exact(li)])
            self._capload[li] = capload
            return capload > c
        return False

    def _overloaded(self, lam: np.ndarray) -> list[int]:
        """Links other than binding ones that the levels `lam` load beyond their capacity."""
        if len(self._bidx) == 1 and self._sums_c is not None:  # (the same, compiled)
            hit = self._sums_c.overloaded(lam, self._bidx.item())
        else:
            hit = np.flatnonzero((self._loads(lam) > self._cap_tol) & ~self._bind_np).tolist()
        return [li for li in hit if self._over(li)]

    def _allocate(self) -> None:
        """Max-min rates after this instant's changes: by the sums if the states still hold,
        else by re-solving the region the change touches; then, if steady flows are no longer
        all at their caps in max-min, they become ordinary flows and it is done again."""
        touched, seeds = self._touched, self._seeds
        self._touched, self._seeds = set(), set()
        self._fresh = set()
        for c in self._opm_changed - touched:
            self._set_state(c, self._c_state[c])  # recount its ops
        self._opm_changed = set()
        grew, self._d_grew = self._d_grew, False
        if touched or seeds or grew:
            force, self._force_solve = self._force_solve, False
            if not force and self._by_sums(touched, seeds, grew):
                self.fast += 1
            else:
                self._solve(touched, seeds)
        if self._steady and not self._steady_holds():
            self._materialize()
            self._allocate()

    def _classify(self, c: int) -> int | None:
        """A new class's state as the present levels make it (None: only a solve can tell)."""
        bl = [li for li in self._c_links[c] if self._binding[li]]
        if bl:
            b = min(bl, key=lambda li: (self._plam[li], li))
            if self._c_level[c] >= self._plam[b]:
                return b
        return None if self._c_cap[c] == math.inf else _CAPPED

    def _by_sums(self, touched: set[int], seeds: set[int], grew: bool = False) -> bool:
        """Recount the changed classes in their states and solve the saturation equations of the
        binding links they touch; True if that is still the max-min allocation (then kept)."""
        binding, plam, C = self._binding, self._plam, self._C
        affected = set(seeds)
        # grew: some load may have grown (else no link can have become overloaded); steady flows
        # that started or moved say so
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
            room = self._pcapacity
            if self._steady:  # steady flows take their caps first
                room = {li: self._pcapacity[li] - self._D.item(li) for li in fill}
            frozen, by, bound = _fill(fill, room, {li: self._sorted_on(li) for li in fill}, links_of,
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

