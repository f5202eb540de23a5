# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""A batch of route moves applied to the per-link sums compiled (`SteadyFlows._route_moves_ready`,
kernel/fluid/steady.py): the same additions to each link's sums in the same order as numpy's
`np.add.at` calls it stands for, so the sums are the same to the bit (the randomized batch-against-
one-at-a-time tests of tests/test_fluid_incremental.py run on it, and whole runs are compared in
tests/test_latency_kernel.py); built with -ffp-contract=off. The network's per-link arrays are held
here between calls; they are made once, with the network. A batch's steps are held by a `Steps`,
made once per batch (a call that took every array would spend more on taking them than on the
loops)."""

from libc.math cimport INFINITY

import numpy as np


cdef inline double _max_nan(double a, double b) noexcept:
    # np.maximum: a NaN on either side is the result
    if a != a or a > b:
        return a
    return b


cdef class Steps:
    """A batch of route moves made ready (`RouteMoves.ready`, kernel/fluid/steady.py): its routes, and
    each step (a route `step[k]` leaving, isign -1, or entering, +1, link idx[k]) in order; the
    links touched (ascending) with the last step on each; the steps entering links; and scratch
    for the routes' counts, sums and bounds, and for the steps skipped."""
    cdef readonly const long[::1] routes
    cdef readonly const long[::1] idx
    cdef readonly const long[::1] step
    cdef readonly const long[::1] isign
    cdef readonly const long[::1] links
    cdef readonly const long[::1] last
    cdef readonly const long[::1] new_idx
    cdef readonly const long[::1] new_route
    cdef readonly list news
    cdef unsigned char[::1] skip
    cdef long[::1] n
    cdef double[::1] tot
    cdef double[::1] rmax

    def __init__(self, const long[::1] routes, list news, const long[::1] idx, const long[::1] step,
                 const long[::1] isign, const long[::1] links, const long[::1] last, const long[::1] new_idx,
                 const long[::1] new_route):
        self.routes = routes
        self.news = news
        self.idx = idx
        self.step = step
        self.isign = isign
        self.links = links
        self.last = last
        self.new_idx = new_idx
        self.new_route = new_route
        self.skip = np.zeros(idx.shape[0], dtype=np.uint8)  # (zeros between uses)
        self.n = np.empty(routes.shape[0], dtype=np.int64)
        self.tot = np.empty(routes.shape[0])
        self.rmax = np.empty(routes.shape[0])


cdef class RouteKernel:
    cdef long[::1] dcnt
    cdef double[::1] P
    cdef double[::1] capload
    cdef double[::1] D
    cdef double[::1] dmax
    cdef long[::1] d_n
    cdef long[::1] d_rn
    cdef const unsigned char[::1] bind

    def __init__(self, long[::1] dcnt, double[::1] P, double[::1] capload, double[::1] D, double[::1] dmax,
                 long[::1] d_n, long[::1] d_rn, const unsigned char[::1] bind):
        self.dcnt = dcnt
        self.P = P
        self.capload = capload
        self.D = D
        self.dmax = dmax
        self.d_n = d_n
        self.d_rn = d_rn
        self.bind = bind

    def move(self, Steps s, list r_slots, list r_total, list r_max, list r_hops):
        """`SteadyFlows._route_moves_ready` after its checks: each route's flows, their caps summed and
        its highest cap level gathered (from the per-route lists); None, and nothing changed, if a
        route has no flow; else the sums applied (`_apply`), each route's hops set to its new ones,
        and (flows moved, the binding links among those touched in order, the links entered by a
        route whose caps sum above 0 in step order, whether any route's sum is above 0)."""
        cdef Py_ssize_t i, k, m = s.routes.shape[0]
        cdef long moved = 0
        cdef bint grew = False
        for i in range(m):
            s.n[i] = len(<set>r_slots[s.routes[i]])
            if s.n[i] == 0:
                return None
            moved += s.n[i]
        for i in range(m):
            s.tot[i] = <double>r_total[s.routes[i]]
            s.rmax[i] = <double>r_max[s.routes[i]]
            if s.tot[i] > 0.0:
                grew = True
        self._apply(s)
        for i in range(m):
            r_hops[s.routes[i]] = s.news[i]
        seeds = [s.links[k] for k in range(s.links.shape[0]) if self.bind[s.links[k]]]
        check = [s.new_idx[k] for k in range(s.new_idx.shape[0]) if s.tot[s.new_route[k]] > 0.0] if grew else []
        return moved, seeds, check, grew

    cdef void _apply(self, Steps s) noexcept:
        # Each step in order: the link's count of steady flows takes n x sign; a link left by its
        # last flow (count 0) skips its last step's sums and ends with exact zeros; the others' P,
        # capload and D take the route's total x sign; every step counts an update and a route
        # through the link; each link entered takes the entering route's highest cap level as its
        # bound.
        cdef Py_ssize_t k, j, m = s.idx.shape[0], nl = s.links.shape[0]
        cdef long li
        cdef double v, x
        cdef bint gone = False
        for k in range(m):
            li = s.idx[k]
            self.dcnt[li] = self.dcnt[li] + s.n[s.step[k]] * s.isign[k]
        for j in range(nl):
            if self.dcnt[s.links[j]] == 0:
                s.skip[s.last[j]] = 1
                gone = True
        for k in range(m):
            if s.skip[k]:
                continue
            li = s.idx[k]
            v = s.tot[s.step[k]] * <double>s.isign[k]
            self.P[li] = self.P[li] + v
            self.capload[li] = self.capload[li] + v
            self.D[li] = self.D[li] + v
        for k in range(m):
            li = s.idx[k]
            self.d_n[li] = self.d_n[li] + 1
            self.d_rn[li] = self.d_rn[li] + s.isign[k]
        for k in range(s.new_idx.shape[0]):
            li = s.new_idx[k]
            self.dmax[li] = _max_nan(self.dmax[li], s.rmax[s.new_route[k]])
        if gone:  # none left: exact zeros, not drift
            for j in range(nl):
                li = s.links[j]
                if self.dcnt[li] == 0:
                    x = self.D[li]
                    self.P[li] = self.P[li] - x
                    self.capload[li] = self.capload[li] - x
                    self.D[li] = 0.0
                    self.d_n[li] = 0
                    self.dmax[li] = -INFINITY
                    s.skip[s.last[j]] = 0


def ready(list moves, tuple olds_all, Py_ssize_t n_links, Py_ssize_t min_moves):
    """`RouteMoves.ready` (kernel/fluid/steady.py) after it found where each route is (olds_all): the
    routes that move (those already where they go stay out) and their new hops; whether the batch
    goes in arrays (at least min_moves routes, none twice, no link both left and entered); and if
    so its `Steps` (each route's old links, then its new ones, route after route) and the links
    touched, ascending. The same as the numpy code there."""
    cdef list routes = [], news = [], olds = []
    cdef Py_ssize_t i, j = 0, k = 0, n, total = 0, nnew = 0, m = len(moves)
    cdef long li
    for i in range(m):
        r, hops = <tuple>moves[i]
        old = olds_all[i]
        if hops != old:
            routes.append(r)
            news.append(hops)
            olds.append(old)
    n = len(routes)
    if n < min_moves or len(set(routes)) != n:
        return routes, news, False, None, None
    left = set()
    for old in olds:
        left.update(<tuple>old)
    for hops in news:
        for x in <tuple>hops:
            if x in left:
                return routes, news, False, None, None
        nnew += len(<tuple>hops)
    for old in olds:
        total += len(<tuple>old)
    total += nnew
    idx, step, isign = np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int64)
    new_idx, new_route = np.empty(nnew, dtype=np.int64), np.empty(nnew, dtype=np.int64)
    last_at = np.full(n_links, -1, dtype=np.int64)
    cdef long[::1] idx_v = idx, step_v = step, isign_v = isign, ni_v = new_idx, nr_v = new_route, last_v = last_at
    for i in range(n):
        for x in <tuple>olds[i]:
            li = x
            idx_v[k] = li
            step_v[k] = i
            isign_v[k] = -1
            last_v[li] = k
            k += 1
        for x in <tuple>news[i]:
            li = x
            idx_v[k] = li
            step_v[k] = i
            isign_v[k] = 1
            last_v[li] = k
            ni_v[j] = li
            nr_v[j] = i
            j += 1
            k += 1
    links_list = [li for li in range(n_links) if last_v[li] >= 0]
    links = np.array(links_list, dtype=np.int64)
    steps = Steps(np.array(routes, dtype=np.int64), news, idx, step, isign, links, last_at[links], new_idx, new_route)
    return routes, news, True, steps, links_list
