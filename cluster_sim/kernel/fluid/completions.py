"""Completions of `FluidNetwork`: one timer for the next flow to end (a heap of capped classes
by time and of binding links by their virtual clocks), and ending the flows that are due."""

from __future__ import annotations

import heapq
import math

from cluster_sim.kernel.fluid.classes import _CAPPED, _NEW

_EPS = 1e-9


class Completions:
    """Mixin of `FluidNetwork`: scheduling the next completion and ending due flows."""

    _SLACK_S = 1e-6  # flows the completion heap says end this close to a timer are checked there

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
