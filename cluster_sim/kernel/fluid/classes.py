"""Classes of identical flows and their states, clocks and sums: the bookkeeping of
`FluidNetwork` (see its docstring for the model: classes, states, sums)."""

from __future__ import annotations

import heapq
import math

import numpy as np

_NEW = -2  # class state: not allocated yet (rate 0)
_CAPPED = -1  # class state: every member at its cap; a link index >= 0: frozen by that link


class FlowClasses:
    """Mixin of `FluidNetwork`: flows joining and leaving classes, each class's state (capped,
    or frozen by a binding link) and clock, the binding links' levels and virtual clocks, and
    the per-link sums P and C that the allocation solves with."""

    _REBASE = 1e6  # a clock this far from 0 is brought back to 0 (keeps its precision)

    def _grow(self) -> None:
        old = len(self._cls)
        self._free.extend(range(2 * old - 1, old - 1, -1))
        self._cls += [-1] * old
        self._tok += [0] * old
        self._stok += [0] * old
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
        if s in self._fresh:
            return 0.0
        rec = self._steady.get(s)
        return rec[1] if rec is not None else self._rate(self._cls[s])

    def _flow_cap(self, s: int) -> float:
        rec = self._steady.get(s)
        return rec[1] if rec is not None else self._c_cap[self._cls[s]]

    def _progress(self, s: int) -> tuple[float, float]:
        """(transferred, remaining) of the flow in slot s now."""
        if s in self._steady:
            return self._steady_progress(s)
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
            if not self._on_link[li]:  # exact sums, not drift (steady flows stay)
                self._P[li] = self._steady_exact(li)
                self._C[li, :] = 0.0
                if not self._uncapped[li]:
                    self._capload[li] = self._D[li]
            if self._binding[li]:
                self._seeds.add(li)  # its other classes may rise
        if st >= 0:
            self._link_entry(st)
        if not self.flows:
            self._ops_base[:] = 0.0
            self._opc[:] = 0.0
        self._cfree.append(c)


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
            sums = self._sums_c  # (the same scan, compiled)
            self.changed_links.update(sums.column_links(b) if sums is not None else np.flatnonzero(self._C[:, b]).tolist())
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
            if self._sums_module is not None:  # (the same scan, compiled)
                lo, hi = self._minf[b], self._maxc[b] = self._sums_module.level_bounds(
                    self._on_link[b], self._c_state, self._c_level, b)
                return lo, hi
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
        caps.append(self._steady_exact(li))
        self._P[li] = math.fsum(caps)
        self._C[li, :] = 0.0
        for b, ws in col.items():
            self._C[li, b] = math.fsum(ws)
        self._fast_n[li] = 0

    def _loads(self, lam: np.ndarray | None = None) -> np.ndarray:
        """Link loads at the levels `lam` (default: the present ones)."""
        lam = self._lam if lam is None else lam
        bidx = self._bidx
        if len(bidx) == 1:  # (most instants: one binding link; a product of one term is that term)
            if self._sums_c is not None:  # (the same, compiled)
                return self._sums_c.loads(lam, bidx.item())
            b = bidx.item()
            return self._P + self._C[:, b] * lam.item(b)
        return self._P + self._C[:, bidx] @ lam[bidx] if len(bidx) else self._P.copy()

