# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The per-link and per-ops-class sums of `FluidNetwork` at a rate change, compiled: the link loads
at the water levels with one binding link (`FlowClasses._loads`), the links they overload
(`Allocation._overloaded`), the record of loads and ops (`FluidNetwork._record`), a LUN's
writes re-priced (`FluidNetwork.set_steady_ops`), and three scans: the links a level moves the
loads of (`FlowClasses._set_level`), a link's level bounds (`FlowClasses._level_bounds`) and the
steady loads above capacity (`SteadyFlows._steady_holds`). Each does numpy's (or Python's)
arithmetic in the same order (an element's product rounded before its sum, built with
-ffp-contract=off; a sum of an array as numpy's pairwise summation adds it), so the results are
the same to the bit (tests/test_sums_kernel.py compares them with numpy's expressions). The
network's arrays are held here between calls; they are made once, with the network."""

from libc.math cimport INFINITY

import numpy as np

cdef Py_ssize_t _BLOCK = 128  # numpy's PW_BLOCKSIZE
cdef long _CAPPED = -1  # a class's state: every member at its cap (kernel/fluid/classes.py)


cdef double _pairwise(const double[::1] a, Py_ssize_t lo, Py_ssize_t n) noexcept:
    # numpy's pairwise summation of a[lo:lo + n] (numpy/_core/src/umath/loops_utils.h.src)
    cdef double r0, r1, r2, r3, r4, r5, r6, r7, res
    cdef Py_ssize_t i, n2
    if n < 8:
        res = 0.0
        for i in range(n):
            res = res + a[lo + i]
        return res
    if n <= _BLOCK:
        r0 = a[lo]
        r1 = a[lo + 1]
        r2 = a[lo + 2]
        r3 = a[lo + 3]
        r4 = a[lo + 4]
        r5 = a[lo + 5]
        r6 = a[lo + 6]
        r7 = a[lo + 7]
        i = 8
        while i < n - (n % 8):
            r0 = r0 + a[lo + i]
            r1 = r1 + a[lo + i + 1]
            r2 = r2 + a[lo + i + 2]
            r3 = r3 + a[lo + i + 3]
            r4 = r4 + a[lo + i + 4]
            r5 = r5 + a[lo + i + 5]
            r6 = r6 + a[lo + i + 6]
            r7 = r7 + a[lo + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res = res + a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, lo, n2) + _pairwise(a, lo + n2, n - n2)


cdef double _sum(const double[::1] a) noexcept:
    # float(a.sum()) as numpy adds it: 0.0 (add's identity, where the reduction starts: a sum of
    # -0.0s is 0.0) plus the pairwise sum
    return 0.0 + _pairwise(a, 0, a.shape[0])


def numpy_sum(const double[::1] a):
    """float(a.sum()) for a 1-d float64 array, as numpy adds it (for tests: `LinkSums.record`'s)."""
    return _sum(a)


cdef class LinkSums:
    """The network's per-link sums P and C, the links' capacities with their tolerance, which links
    bind, and the ops sums per class (ops_base, opc): the arrays `FluidNetwork` made."""
    cdef const double[::1] P
    cdef const double[:, ::1] C
    cdef const double[::1] cap_tol
    cdef const unsigned char[::1] bind
    cdef const double[::1] ops_base
    cdef const double[:, ::1] opc

    def __init__(self, const double[::1] P, const double[:, ::1] C, const double[::1] cap_tol,
                 const unsigned char[::1] bind, const double[::1] ops_base, const double[:, ::1] opc):
        self.P = P
        self.C = C
        self.cap_tol = cap_tol
        self.bind = bind
        self.ops_base = ops_base
        self.opc = opc

    cdef object _loads(self, double x, Py_ssize_t b):
        # P + C[:, b] * x, a new array
        cdef Py_ssize_t i, n = self.P.shape[0]
        out = np.empty(n)
        cdef double[::1] o = out
        for i in range(n):
            o[i] = self.P[i] + self.C[i, b] * x
        return out

    def loads(self, const double[::1] lam, Py_ssize_t b):
        """P + C[:, b] * lam[b] (b the one binding link): a new array."""
        return self._loads(lam[b], b)

    def overloaded(self, const double[::1] lam, Py_ssize_t b):
        """The links, in order, other than binding ones whose load at the levels `lam` (b the one
        binding link) is above their capacity's tolerance."""
        cdef Py_ssize_t i, n = self.P.shape[0]
        cdef double x = lam[b]
        cdef list hit = []
        for i in range(n):
            if self.P[i] + self.C[i, b] * x > self.cap_tol[i] and not self.bind[i]:
                hit.append(i)
        return hit

    def column_links(self, Py_ssize_t b):
        """The links whose row of C has a nonzero in column b, in order
        (np.flatnonzero(C[:, b]).tolist(): a NaN counts as nonzero)."""
        cdef Py_ssize_t i, n = self.C.shape[0]
        cdef list out = []
        for i in range(n):
            if self.C[i, b] != 0.0:
                out.append(i)
        return out

    def record(self, const double[::1] lam, Py_ssize_t b):
        """(loads, ops per class, their sum) at the levels `lam`, b the one binding link: the
        loads as `loads`, ops_base + opc[b] * lam[b], and numpy's sum of that."""
        cdef Py_ssize_t i, k = self.ops_base.shape[0]
        cdef double x = lam[b]
        by_class = np.empty(k)
        cdef double[::1] bc = by_class
        for i in range(k):
            bc[i] = self.ops_base[i] + self.opc[b, i] * x
        return self._loads(x, b), by_class, _sum(bc)


def steady_ops(list opm, const Py_ssize_t[::1] slots, const double[::1] caps, const double[::1] ops,
               double base):
    """A LUN's steady writes re-priced (`FluidNetwork.set_steady_ops`): None if no flow's ops per
    MiB changes (nothing is written); else each slot's ops per MiB in `opm` set to its new value,
    and the class's base sum with cap x (new - old) added flow after flow, returned."""
    cdef Py_ssize_t i, n = slots.shape[0]
    cdef double old
    for i in range(n):
        if ops[i] != <double>opm[slots[i]]:
            break
    else:
        return None
    for i in range(n):
        old = <double>opm[slots[i]]
        base = base + caps[i] * (ops[i] - old)
        opm[slots[i]] = ops[i]
    return base


def any_above(set links, const double[::1] D, const double[::1] cap, double factor):
    """Is the steady load D of one of these links above its capacity x factor
    (`SteadyFlows._steady_holds`: (D[links] > capacity[links] * factor).any())?"""
    cdef Py_ssize_t li
    for x in links:
        li = x
        if D[li] > cap[li] * factor:
            return True
    return False


def level_bounds(set on_link, list state, list level, long b):
    """(lowest cap level of the classes link b froze, highest of the capped classes on it) from
    the link's classes, as `FlowClasses._level_bounds` finds them with Python's min and max (inf
    and -inf if none; a NaN level is never taken)."""
    cdef double lo = INFINITY, hi = -INFINITY, x
    cdef long st
    cdef Py_ssize_t c
    for o in on_link:
        c = o
        st = state[c]
        if st == b:
            x = level[c]
            if x < lo:
                lo = x
        elif st == _CAPPED:
            x = level[c]
            if x > hi:
                hi = x
    return lo, hi
