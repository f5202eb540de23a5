# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""A batch of route moves applied to the per-link sums compiled (`SteadyFlows._route_moves_ready`,
kernel/fluid/steady.py): the same additions to each link's sums in the same order as numpy's
`np.add.at` calls it stands for, so the sums are the same to the bit (the randomized batch-against-
one-at-a-time tests of tests/test_fluid_incremental.py run on it, and whole runs are compared in
tests/test_latency_kernel.py); built with -ffp-contract=off. The network's per-link arrays are held
here between calls; they are made once, with the network."""

from libc.math cimport INFINITY


cdef inline double _max_nan(double a, double b) noexcept:
    # np.maximum: a NaN on either side is the result
    if a != a or a > b:
        return a
    return b


cdef class RouteKernel:
    cdef long[::1] dcnt
    cdef double[::1] P
    cdef double[::1] capload
    cdef double[::1] D
    cdef double[::1] dmax
    cdef long[::1] d_n
    cdef long[::1] d_rn

    def __init__(self, long[::1] dcnt, double[::1] P, double[::1] capload, double[::1] D, double[::1] dmax,
                 long[::1] d_n, long[::1] d_rn):
        self.dcnt = dcnt
        self.P = P
        self.capload = capload
        self.D = D
        self.dmax = dmax
        self.d_n = d_n
        self.d_rn = d_rn

    def move(self, const long[::1] routes, list r_slots, list r_total, list r_max, const unsigned char[::1] bind,
             long[::1] n, double[::1] tot, double[::1] rmax, const long[::1] idx, const long[::1] step,
             const long[::1] isign, const long[::1] links, const long[::1] last, const long[::1] new_idx,
             const long[::1] new_route, unsigned char[::1] skip):
        """`SteadyFlows._route_moves_ready` after its checks: each route's flows, their caps summed and
        its highest cap level gathered into n, tot and rmax (from the per-route lists); None, and
        nothing changed, if a route has no flow; else the sums applied (`apply`) and (flows moved,
        the binding links among those touched in order, the links entered by a route with flows
        whose caps sum above 0 in step order, whether any route's sum is above 0)."""
        cdef Py_ssize_t i, k, m = routes.shape[0]
        cdef long moved = 0
        cdef bint grew = False
        for i in range(m):
            n[i] = len(<set>r_slots[routes[i]])
            if n[i] == 0:
                return None
            moved += n[i]
        for i in range(m):
            tot[i] = <double>r_total[routes[i]]
            rmax[i] = <double>r_max[routes[i]]
            if tot[i] > 0.0:
                grew = True
        self.apply(idx, step, isign, links, last, new_idx, new_route, skip, n, tot, rmax)
        seeds = [links[k] for k in range(links.shape[0]) if bind[links[k]]]
        check = [new_idx[k] for k in range(new_idx.shape[0]) if tot[new_route[k]] > 0.0] if grew else []
        return moved, seeds, check, grew

    def apply(self, const long[::1] idx, const long[::1] step, const long[::1] isign, const long[::1] links,
              const long[::1] last, const long[::1] new_idx, const long[::1] new_route, unsigned char[::1] skip,
              const long[::1] n, const double[::1] tot, const double[::1] rmax):
        """Each step k (a route `step[k]` leaving, isign -1, or entering, +1, link idx[k]), in order:
        the link's count of steady flows takes n x sign; a link left by its last flow (count 0)
        skips its last step's sums and ends with exact zeros; the others' P, capload and D take the
        route's total x sign; every step counts an update and a route through the link; each link
        entered takes the entering route's highest cap level as its bound."""
        cdef Py_ssize_t k, j, m = idx.shape[0], nl = links.shape[0]
        cdef long li
        cdef double v, x
        cdef bint gone = False
        for k in range(m):
            li = idx[k]
            self.dcnt[li] = self.dcnt[li] + n[step[k]] * isign[k]
        for j in range(nl):
            if self.dcnt[links[j]] == 0:
                skip[last[j]] = 1
                gone = True
        for k in range(m):
            if skip[k]:
                continue
            li = idx[k]
            v = tot[step[k]] * <double>isign[k]
            self.P[li] = self.P[li] + v
            self.capload[li] = self.capload[li] + v
            self.D[li] = self.D[li] + v
        for k in range(m):
            li = idx[k]
            self.d_n[li] = self.d_n[li] + 1
            self.d_rn[li] = self.d_rn[li] + isign[k]
        for k in range(new_idx.shape[0]):
            li = new_idx[k]
            self.dmax[li] = _max_nan(self.dmax[li], rmax[new_route[k]])
        if gone:  # none left: exact zeros, not drift
            for j in range(nl):
                li = links[j]
                if self.dcnt[li] == 0:
                    x = self.D[li]
                    self.P[li] = self.P[li] - x
                    self.capload[li] = self.capload[li] - x
                    self.D[li] = 0.0
                    self.d_n[li] = 0
                    self.dmax[li] = -INFINITY
                    skip[last[j]] = 0
