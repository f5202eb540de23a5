# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The latency bookkeeping of `IoModel` (cluster/io.py) compiled: at every rate change, the
latency terms of the array's controllers and of the links, each path class in use at its
latency, and the time since the last change integrated and binned at the latencies then in
force. The same arithmetic, in the same order, as the numpy expressions it stands for
(`IoModel._terms`, `_latencies`, `_settle`, `_bins_now`), so the results are the same to the bit
(tests/test_latency_kernel.py compares them); built with -ffp-contract=off (no fused
multiply-add). Without a compiler io.py runs the numpy expressions.

The arrays are the IoModel's own, held here between calls (a call that took every array would
spend more on taking them than on the loops): its owner gives them again when it makes new ones
(`classes` when the class rows grow, `in_use` when the classes in use change, `phase`)."""

import numpy as np


cdef inline double _min_nan(double a, double b) noexcept:
    # np.minimum: a NaN on either side is the result
    if a != a or a < b:
        return a
    return b


cdef inline double _max_nan(double a, double b) noexcept:
    # np.maximum: a NaN on either side is the result
    if a != a or a > b:
        return a
    return b


cdef class LatencyKernel:
    # per link (and hop_r's 0 at its end: no hop), per controller, the histogram's tables
    cdef const double[::1] cap
    cdef const double[::1] hop_service
    cdef double[::1] hop_r
    cdef double[::1] array_term
    cdef const double[::1] edges
    cdef const long[::1] bin_of
    cdef const double[::1] below
    cdef const double[::1] above
    cdef double[::1] scratch
    cdef double rho_max, iops_per_controller, s_array
    cdef Py_ssize_t read_i, write_i
    # per class (rows grown by doubling)
    cdef double[::1] cint
    cdef double[::1] clat
    cdef const double[::1] ccount
    cdef long[::1] cj
    # per class in use
    cdef const long[::1] act
    cdef const long[::1] ctrl
    cdef const long[::1] h0
    cdef const long[::1] h1
    cdef const long[::1] h2
    cdef long[::1] act_b
    cdef double[::1] act_lo
    cdef double[::1] act_hi
    # the phase's histogram
    cdef double[::1] hist

    def __init__(self, const double[::1] cap, const double[::1] hop_service, double[::1] hop_r,
                 double[::1] array_term, double rho_max, double iops_per_controller, double s_array,
                 Py_ssize_t read_i, Py_ssize_t write_i, const double[::1] edges, const long[::1] bin_of,
                 const double[::1] below, const double[::1] above, double[::1] scratch):
        """hop_r: one more than the links, its last 0; array_term: one per ops class (controller);
        scratch: one per bin, zeros."""
        self.cap = cap
        self.hop_service = hop_service
        self.hop_r = hop_r
        self.array_term = array_term
        self.rho_max = rho_max
        self.iops_per_controller = iops_per_controller
        self.s_array = s_array
        self.read_i = read_i
        self.write_i = write_i
        self.edges = edges
        self.bin_of = bin_of
        self.below = below
        self.above = above
        self.scratch = scratch

    def classes(self, double[::1] cint, double[::1] clat, const double[::1] ccount, long[::1] cj):
        self.cint = cint
        self.clat = clat
        self.ccount = ccount
        self.cj = cj

    def in_use(self, const long[::1] act, const long[::1] ctrl, const long[::1] h0, const long[::1] h1,
               const long[::1] h2, long[::1] act_b, double[::1] act_lo, double[::1] act_hi):
        self._hold(act, ctrl, h0, h1, h2, act_b, act_lo, act_hi)

    cdef void _hold(self, const long[::1] act, const long[::1] ctrl, const long[::1] h0, const long[::1] h1,
                    const long[::1] h2, long[::1] act_b, double[::1] act_lo, double[::1] act_hi) noexcept:
        # the classes in use and what the loops read of them, held between calls
        self.act = act
        self.ctrl = ctrl
        self.h0 = h0
        self.h1 = h1
        self.h2 = h2
        self.act_b = act_b
        self.act_lo = act_lo
        self.act_hi = act_hi

    def phase(self, double[::1] hist):
        self.hist = hist

    def take_in_use(self, Py_ssize_t ncls, const long[::1] cctrl, const long[:, ::1] chops):
        """The classes in use taken again (`IoModel._on_rates`): those of the first ncls with VMs
        (count > 0), their controllers and hops (rows of chops), and the bins and edges of the
        latencies they were last binned at (cj); held, and returned as (act, (ctrl, h0, h1, h2),
        bins, edges below, edges above)."""
        cdef Py_ssize_t c, i, m = 0, j
        cdef const double[::1] ccount = self.ccount
        cdef long[::1] cj = self.cj
        scratch = np.empty(ncls, dtype=np.int64)
        cdef long[::1] found = scratch
        for c in range(ncls):
            if ccount[c] > 0:
                found[m] = c
                m += 1
        act = scratch[:m].copy()
        ctrl, h0, h1, h2, b = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64), \
            np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
        lo, hi = np.empty(m), np.empty(m)
        cdef long[::1] c_v = ctrl, h0_v = h0, h1_v = h1, h2_v = h2, b_v = b
        cdef double[::1] lo_v = lo, hi_v = hi
        for i in range(m):
            c = found[i]
            c_v[i] = cctrl[c]
            h0_v[i] = chops[0, c]
            h1_v[i] = chops[1, c]
            h2_v[i] = chops[2, c]
            j = cj[c]
            b_v[i] = self.bin_of[j]
            lo_v[i] = self.below[j]
            hi_v[i] = self.above[j]
        self._hold(act, c_v, h0_v, h1_v, h2_v, b_v, lo_v, hi_v)
        return act, (ctrl, h0, h1, h2), b, lo, hi

    def latencies(self, const double[::1] load, const double[::1] ops, double[::1] out):
        """The terms now (rho per link capped at rho_max; the array's bandwidth term the higher of
        its read and write links'; per controller its ops share or that, capped; s / (1 - rho)), then
        out[i] = array_term[ctrl[i]] + ((hop_r[h0[i]] + hop_r[h1[i]]) + hop_r[h2[i]]) for each class in
        use (a hop of -1: hop_r's last element, 0), and the class's row of clat."""
        cdef Py_ssize_t i, n = out.shape[0], nl = load.shape[0], m = self.hop_r.shape[0]
        cdef long a, b, c
        cdef double rho, bw, rr = 0.0, rw = 0.0, t
        if ops.shape[0] > self.array_term.shape[0] or nl + 1 != m:
            raise ValueError("ops per controller or loads per link do not fit the kernel's terms")
        for i in range(nl):
            rho = _min_nan(load[i] / self.cap[i], self.rho_max)
            if i == self.read_i:
                rr = rho
            if i == self.write_i:
                rw = rho
            self.hop_r[i] = self.hop_service[i] / (1.0 - rho)
        bw = rw if rw > rr else rr  # (Python's max(rr, rw): the first unless the second is greater)
        for i in range(ops.shape[0]):
            self.array_term[i] = self.s_array / (1.0 - _min_nan(_max_nan(ops[i] / self.iops_per_controller, bw),
                                                                 self.rho_max))
        for i in range(n):
            a = self.h0[i]
            b = self.h1[i]
            c = self.h2[i]
            if a < 0:
                a += m
            if b < 0:
                b += m
            if c < 0:
                c += m
            t = self.hop_r[a] + self.hop_r[b]
            t = t + self.hop_r[c]
            out[i] = self.array_term[self.ctrl[i]] + t
            self.clat[self.act[i]] = out[i]

    def settle(self, const double[::1] lat, double dt, bint running, bint binned):
        """dt (> 0) at the latencies `lat` of the classes in use: each class's integral takes
        lat x dt; with VMs running, the latencies are binned (if not yet: a class whose latency left
        the bin it was in takes searchsorted's bin, side left, and its edges) and the histogram takes
        each class's VMs x dt in its bin, added up per bin first in the classes' order (numpy's
        bincount), then to the histogram."""
        cdef Py_ssize_t i, k, n = self.act.shape[0], nb = self.edges.shape[0], lo, hi, mid
        cdef long a
        cdef double x, p
        for i in range(n):
            a = self.act[i]
            p = lat[i] * dt
            self.cint[a] = self.cint[a] + p
        if not running:
            return
        if not binned:
            for i in range(n):
                x = lat[i]
                if self.act_lo[i] < x and x <= self.act_hi[i]:
                    continue
                if x != x:  # (NaN: numpy sorts it after every edge)
                    lo = nb
                else:
                    lo = 0
                    hi = nb
                    while lo < hi:
                        mid = (lo + hi) >> 1
                        if self.edges[mid] < x:
                            lo = mid + 1
                        else:
                            hi = mid
                self.cj[self.act[i]] = lo
                self.act_b[i] = self.bin_of[lo]
                self.act_lo[i] = self.below[lo]
                self.act_hi[i] = self.above[lo]
        for i in range(n):
            p = self.ccount[self.act[i]] * dt
            self.scratch[self.act_b[i]] = self.scratch[self.act_b[i]] + p
        for k in range(self.hist.shape[0]):
            self.hist[k] = self.hist[k] + self.scratch[k]
            self.scratch[k] = 0.0


def set_hops_many(const long[::1] g, const long[::1] k, long[::1] gcls, const long[::1] counts,
                  const double[::1] cint, double[::1] gmark, double[::1] gint, double[::1] gtime,
                  double[::1] ccount, list lat, list tim, Py_ssize_t ci, double now):
    """`IoModel._set_hops_many` after its checks: groups g (of CSV ci) take path classes k; a group
    that keeps its class is left as it is (as `_set_hops` leaves it). Each other group is brought
    up to date (its latency integral, its VM-seconds) and its CSV's sums in `lat` and `tim` take
    each group's share one after the other, as np.add.accumulate adds them; the classes' counts
    take the groups' VMs out of the old classes, all of them, then into the new ones, as
    np.subtract.at and np.add.at do (only if a group that changes class has VMs). Returns whether
    one has (the classes in use may have changed)."""
    cdef Py_ssize_t i, gi, m = g.shape[0]
    cdef long old
    cdef double n, d, sl, st
    cdef bint any_n = False
    moves = np.zeros(m, dtype=np.uint8)
    cdef unsigned char[::1] moving = moves
    for i in range(m):
        if gcls[g[i]] != k[i]:
            moving[i] = 1
            if counts[g[i]] != 0:
                any_n = True
    sl = <double>lat[ci]
    st = <double>tim[ci]
    for i in range(m):
        if not moving[i]:
            continue
        gi = g[i]
        old = gcls[gi]
        n = <double>counts[gi]
        d = cint[old] - gmark[gi]
        sl = sl + n * d
        st = st + n * (now - gtime[gi])
        gint[gi] = gint[gi] + d
        gtime[gi] = now
        gcls[gi] = k[i]
        gmark[gi] = cint[k[i]]
        if any_n:
            ccount[old] = ccount[old] - n
    lat[ci] = sl
    tim[ci] = st
    if any_n:
        for i in range(m):
            if moving[i]:
                ccount[k[i]] = ccount[k[i]] + <double>counts[g[i]]
    return any_n
