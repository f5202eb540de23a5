"""How a VM's disk changes over time: the block-change process shared by the data plane and
the analytic byte counts (incrementals, AVHDX merges), and the copy-on-write decay.

Daily change is not the working set [V]: the I/O touches the working set, but a VM changes only
`daily_change_fraction` of its used data per day (3-10 % is typical). Two views of it:

1. Blocks (data plane, change tracking; `storage.block_size_mib`): a VM's used data is n blocks
   (per disk, rounded up); its writes fall on a working set of ws = round(n x
   working_set_fraction) blocks with Zipf popularity p_b ~ 1 / b^s (`write_skew_zipf_s`). Block
   b changes as a Poisson process of rate lambda_b = c p_b, the total rate c calibrated so that
   the expected share of blocks changed in one day is the daily change:
       sum_b (1 - exp(-c p_b 86400)) = daily_change_fraction x n
   (c at most `write_iops`: a block changes only when a write reaches it; a VM whose daily change
   is its whole working set changes blocks at its write rate). The expected blocks changed after
   t seconds are C(t) = sum_b (1 - exp(-lambda_b t)).

2. Copy-on-write (array chunks, I/O granularity) [V]: the writes (w = the VM's write MiB/s) fall
   uniformly on a hot set of H MiB whose distinct data written in a day is the daily change,
   H (1 - exp(-w 86400 / H)) = daily_change_fraction x used. The share of writes that hit data
   not yet copied since a snapshot taken `age` seconds ago is then
       f(age) = exp(-w age / H)
   (DOMAIN.md: f(t) = exp(-w t / N)); each new snapshot starts again at 1. Skewed writes decay
   faster, so this is the costlier, uniform case.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from cluster_sim.scenario.placement import VmSpec

DAY_S = 86400.0


def block_count(spec: VmSpec, block_mib: float) -> int:
    return max(1, sum(math.ceil(d.used_mib / block_mib) for d in spec.disks))


def working_set_blocks(n: int, working_set_fraction: float) -> int:
    return max(1, round(n * working_set_fraction))


def zipf_weights(ws: int, s: float) -> np.ndarray:
    """Popularity of the working set's blocks, most popular first, summing to 1."""
    w = 1.0 / np.arange(1, ws + 1, dtype=float) ** s
    return w / w.sum()


def calibrate_rate(p: np.ndarray, target_blocks: float, horizon_s: float, max_rate: float) -> float:
    """The total change rate c with sum(1 - exp(-c p horizon)) = target_blocks, capped at max_rate.

    The left side grows with c from 0 to len(p): bisection on log c (60 halvings, relative error
    below 1e-12)."""
    if target_blocks <= 0 or max_rate <= 0 or horizon_s <= 0:
        return 0.0
    if target_blocks >= len(p):
        return max_rate

    def changed(c: float) -> float:
        return float(-np.expm1(-c * p * horizon_s).sum())

    lo, hi = 1e-300, 1.0 / horizon_s
    while changed(hi) < target_blocks:
        lo, hi = hi, hi * 2.0
        if hi > max_rate * 2:
            return max_rate
    for _ in range(200):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        if changed(mid) < target_blocks:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return min(hi, max_rate)


class WriteModel:
    """The block-change process of one kind of VM (a template): rates per working-set block."""

    def __init__(self, n: int, ws: int, zipf_s: float, daily_change_fraction: float, write_iops: float,
                 working_set_fraction: float = 1.0):
        self.n = n
        self.ws = ws
        self.p = zipf_weights(ws, zipf_s)
        if daily_change_fraction >= working_set_fraction:
            self.total_rate = write_iops  # the whole working set changes daily: every write changes a block
        else:
            self.total_rate = calibrate_rate(self.p, daily_change_fraction * n, DAY_S, write_iops)
        self.rates = self.total_rate * self.p  # per block, most popular first

    def changed_blocks(self, t_s: float) -> float:
        """Expected blocks changed in t_s seconds of running."""
        if t_s <= 0 or self.total_rate <= 0:
            return 0.0
        return float(-np.expm1(-self.rates * t_s).sum())


@lru_cache(maxsize=4096)
def _model(n: int, ws: int, zipf_s: float, daily: float, write_iops: float, wsf: float) -> WriteModel:
    return WriteModel(n, ws, zipf_s, daily, write_iops, wsf)


def write_model(spec: VmSpec, block_mib: float) -> WriteModel:
    n = block_count(spec, block_mib)
    ws = working_set_blocks(n, spec.working_set_fraction)
    return _model(n, ws, float(spec.write_skew_zipf_s), float(spec.daily_change_fraction), float(spec.write_iops),
                  float(spec.working_set_fraction))


def changed_mib(spec: VmSpec, block_mib: float, t_s: float) -> float:
    """Expected MiB changed in t_s seconds of running (whole blocks, as change tracking copies them)."""
    return write_model(spec, block_mib).changed_blocks(t_s) * block_mib


@lru_cache(maxsize=4096)  # (a bisection; asked once per VM group, with one pair of numbers per template)
def hot_set_mib(write_mib_s: float, daily_change_mib: float) -> float:
    """H with H (1 - exp(-w 86400 / H)) = daily change: the data the writes fall on.

    inf when a day's writes are no more than the daily change (every write is new data); 0 when
    nothing changes. With x = w 86400 / H the equation is (1 - exp(-x)) / x = D / (w 86400),
    whose left side falls from 1 (x = 0) towards 0: bisection on x."""
    if daily_change_mib <= 0 or write_mib_s <= 0:
        return 0.0
    written = write_mib_s * DAY_S
    r = daily_change_mib / written
    if r >= 1.0:
        return math.inf
    lo, hi = 0.0, 1.0
    while -math.expm1(-hi) / hi > r:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid > 0 and -math.expm1(-mid) / mid > r:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return written / ((lo + hi) / 2)


def cow_decay_s(spec: VmSpec) -> float:
    """The copy-on-write time constant H / w of a VM (inf: f stays 1; 0: no changes)."""
    h = hot_set_mib(spec.write_mib_s, spec.daily_change_fraction * spec.used_mib)
    if h == 0.0:
        return 0.0
    return h / spec.write_mib_s


def cow_share(decay_s: float, age_s: float) -> float:
    """f(age) = exp(-age / decay_s): the share of writes that hit data a snapshot `age_s` old has
    not copied yet."""
    if age_s <= 0:
        return 1.0
    if decay_s <= 0:
        return 0.0
    return math.exp(-age_s / decay_s)
