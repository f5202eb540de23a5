# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""A batch of route moves applied to the per-link sums compiled (`SteadyFlows._route_moves_ready`,
kernel/fluid/steady.py): the same additions to each link's sums in the same order as numpy's
`np.add.at` calls it stands for, so the sums are the same to the bit (the randomized batch-against-
one-at-a-time tests of tests/test_fluid_incremental.py run on it, and whole runs are compared in
tests/test_latency_kernel.py); built with -ffp-contract=off. The network's per-link arrays are held
here between calls; they are made once, with the network. A batch's steps are made here
(`ready`, the same as numpy's code in `RouteMoves.ready`) into a `Steps` of C arrays, once per
batch (numpy arrays cost more to make and to take at each call than the loops over them)."""

from libc.math cimport INFINITY
from libc.stdlib cimport calloc, free


cdef inline double _max_nan(double a, double b) noexcept:
    # np.maximum: a NaN on either side is the result
    if a != a or a > b:
        return a
    return b


cdef class Steps:
    """A batch of route moves made ready (`ready`): its routes and their new hops, and each step (a
    route `step[k]` leaving, isign -1, or entering, +1, link idx[k]) in order; the links touched
    (ascending) with the last step on each; the steps entering links; and scratch for the routes'
    counts, sums and bounds, and for the steps skipped. C arrays, made and freed with it."""
    cdef Py_ssize_t nr, m, nnew, nl
    cdef long* routes
    cdef long* idx
    cdef long* step
    cdef long* isign
    cdef long* links
    cdef long* last
    cdef long* new_idx
    cdef long* new_route
    cdef unsigned char* skip
    cdef long* n
    cdef double* tot
    cdef double* rmax
    cdef list news

    def __dealloc__(self):
        free(self.routes)
        free(self.idx)
        free(self.step)
        free(self.isign)
        free(self.links)
        free(self.last)
        free(self.new_idx)
        free(self.new_route)
        free(self.skip)
        free(self.n)
        free(self.tot)
        free(self.rmax)

    def lists(self):
        """Its arrays as lists (for tests)."""
        return {"routes": [self.routes[i] for i in range(self.nr)], "news": list(self.news),
                "idx": [self.idx[k] for k in range(self.m)], "step": [self.step[k] for k in range(self.m)],
                "isign": [self.isign[k] for k in range(self.m)], "links": [self.links[j] for j in range(self.nl)],
                "last": [self.last[j] for j in range(self.nl)], "new_idx": [self.new_idx[j] for j in range(self.nnew)],
                "new_route": [self.new_route[j] for j in range(self.nnew)]}


cdef Steps _steps(list routes, list news, list olds, Py_ssize_t m, Py_ssize_t nnew, Py_ssize_t n_links):
    cdef Steps s = Steps.__new__(Steps)
    cdef Py_ssize_t i, j = 0, k = 0, nr = len(routes)
    cdef long li
    s.nr, s.m, s.nnew, s.news = nr, m, nnew, news
    s.routes = <long*>calloc(nr + 1, sizeof(long))
    s.idx = <long*>calloc(m + 1, sizeof(long))
    s.step = <long*>calloc(m + 1, sizeof(long))
    s.isign = <long*>calloc(m + 1, sizeof(long))
    s.new_idx = <long*>calloc(nnew + 1, sizeof(long))
    s.new_route = <long*>calloc(nnew + 1, sizeof(long))
    s.skip = <unsigned char*>calloc(m + 1, sizeof(unsigned char))  # (zeros between uses)
    s.n = <long*>calloc(nr + 1, sizeof(long))
    s.tot = <double*>calloc(nr + 1, sizeof(double))
    s.rmax = <double*>calloc(nr + 1, sizeof(double))
    cdef long* last_at = <long*>calloc(n_links + 1, sizeof(long))  # (the last step on each link, + 1)
    if (not s.routes or not s.idx or not s.step or not s.isign or not s.new_idx or not s.new_route or not s.skip
            or not s.n or not s.tot or not s.rmax or not last_at):
        free(last_at)
        raise MemoryError()
    for i in range(nr):
        s.routes[i] = routes[i]
        for x in <tuple>olds[i]:
            li = x
            s.idx[k] = li
            s.step[k] = i
            s.isign[k] = -1
            last_at[li] = k + 1
            k += 1
        for x in <tuple>news[i]:
            li = x
            s.idx[k] = li
            s.step[k] = i
            s.isign[k] = 1
            last_at[li] = k + 1
            s.new_idx[j] = li
            s.new_route[j] = i
            j += 1
            k += 1
    s.nl = 0
    for li in range(n_links):
        if last_at[li]:
            s.nl += 1
    s.links = <long*>calloc(s.nl + 1, sizeof(long))
    s.last = <long*>calloc(s.nl + 1, sizeof(long))
    if not s.links or not s.last:
        free(last_at)
        raise MemoryError()
    j = 0
    for li in range(n_links):
        if last_at[li]:
            s.links[j] = li
            s.last[j] = last_at[li] - 1
            j += 1
    free(last_at)
    return s


def ready(list moves, tuple olds_all, Py_ssize_t n_links, Py_ssize_t min_moves):
    """`RouteMoves.ready` (kernel/fluid/steady.py) after it found where each route is (olds_all): the
    routes that move (those already where they go stay out) and their new hops; whether the batch
    goes in arrays (at least min_moves routes, none twice, no link both left and entered); and if
    so its `Steps` (each route's old links, then its new ones, route after route) and the links
    touched, ascending. The same as the numpy code there."""
    cdef list routes = [], news = [], olds = []
    cdef Py_ssize_t i, n, total = 0, nnew = 0, m = len(moves)
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
    cdef unsigned char* left = <unsigned char*>calloc(n_links + 1, sizeof(unsigned char))  # (links left)
    cdef long li
    if not left:
        raise MemoryError()
    for old in olds:
        for x in <tuple>old:
            li = x
            if li < 0 or li >= n_links:  # (the C arrays below are indexed by it: never past their end)
                free(left)
                raise IndexError(f"a route's link {li} is not one of the network's {n_links}")
            left[li] = 1
        total += len(<tuple>old)
    for hops in news:
        for x in <tuple>hops:
            li = x
            if li < 0 or li >= n_links:
                free(left)
                raise IndexError(f"a route's link {li} is not one of the network's {n_links}")
            if left[li]:
                free(left)
                return routes, news, False, None, None
        nnew += len(<tuple>hops)
    free(left)
    cdef Steps s = _steps(routes, news, olds, total + nnew, nnew, n_links)
    return routes, news, True, s, [s.links[j] for j in range(s.nl)]


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
        cdef Py_ssize_t i, k, m = s.nr
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
        seeds = [s.links[k] for k in range(s.nl) if self.bind[s.links[k]]]
        check = [s.new_idx[k] for k in range(s.nnew) if s.tot[s.new_route[k]] > 0.0] if grew else []
        return moved, seeds, check, grew

    cdef void _apply(self, Steps s) noexcept:
        # Each step in order: the link's count of steady flows takes n x sign; a link left by its
        # last flow (count 0) skips its last step's sums and ends with exact zeros; the others' P,
        # capload and D take the route's total x sign; every step counts an update and a route
        # through the link; each link entered takes the entering route's highest cap level as its
        # bound.
        cdef Py_ssize_t k, j, m = s.m, nl = s.nl
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
        for k in range(s.nnew):
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
