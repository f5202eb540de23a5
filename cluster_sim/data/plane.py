"""The data plane: every virtual disk as a vector of block versions.

Each VM's disks are one vector of blocks (`storage.block_size_mib`, 64 MiB by default [P]) over
their used space. A block's value is the version of the last write that reached it; versions
grow with time, and each maps to the instant it was materialised at.

Writes: each block of the VM's working set (`working_set_fraction` of its blocks, placed at
random) changes as a Poisson process whose rate follows Zipf popularity (`write_skew_zipf_s`),
the total calibrated to the VM's `daily_change_fraction` (cluster/writes.py: the same process
gives the analytic byte counts and copy-on-write's decay). Over a running interval of length d,
block b changes at least once with probability 1 - exp(-lambda_b d), drawn from the VM's own
random stream. Writes are advanced lazily, in one vectorised slice per VM, up to the instant a
control-plane step needs.

Durability: the guest keeps recent writes in its cache and flushes every
`guest_flush_interval_s` [P] and at a VSS freeze. The disk state is only ever materialised at
flush instants, so a crash loses exactly the writes since the last flush (the guest cache,
volatile, on the host), and the durable vector (with the storage array) keeps the rest.

Change tracking (RCT, a vendor's filter driver) is kept by the backup (backup/tracking.py): it
holds a reference version per VM, and `changed_since` lists the blocks newer than it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cluster_sim.cluster.writes import write_model
from cluster_sim.kernel.kept import Kept
from cluster_sim.kernel.rng import Streams
from cluster_sim.scenario.placement import VmSpec

STARTS_KEPT = 1  # [P] scenarios whose disks' first state a process keeps for its next generation

# The disks as they start (each VM's block count, working set, its blocks' rates, its flush phase and
# its random stream's state after those draws), by everything they are drawn from: a process that
# runs another generation of the same scenario (a pool worker runs two of four) starts its disks
# from here, with the same numbers, instead of drawing them again (8,000 VMs: about 0.35 s). The
# working sets and rates are only ever read, so the generations share them.
_STARTS: Kept[list[tuple]] = Kept(STARTS_KEPT)


class VmDisk:
    __slots__ = ("vm", "n", "hot", "rate", "versions", "t_mat", "phase", "flush_s", "explicit_flush",
                 "down", "rng", "block_mib")

    def __init__(self, spec: VmSpec, block_mib: float, flush_s: float, rng: np.random.Generator,
                 start: tuple | None = None):
        """start: what `start_of` took from a disk made before from the same VM, stream and flush
        interval (its draws taken from there, the stream set where they left it), or None: drawn."""
        self.vm = spec.name
        self.block_mib = block_mib
        if start is None:
            model = write_model(spec, block_mib)
            self.n = model.n
            ws = model.ws
            self.hot = np.sort(rng.choice(self.n, size=ws, replace=False))
            # popularity is not tied to block order: the rates of the model, in a random order
            self.rate = model.rates[rng.permutation(ws)]  # changes/s of each working-set block
            self.phase = float(rng.uniform(0.0, flush_s)) if flush_s > 0 else 0.0
        else:
            self.n, self.hot, self.rate, self.phase, state = start
            rng.bit_generator.state = state  # (where the draws above left it)
        self.versions = np.zeros(self.n, dtype=np.int32)  # version 0: the disk as it was at t=0
        self.t_mat = 0.0
        self.flush_s = flush_s
        self.explicit_flush = 0.0
        # [start, end] intervals without writes (end inf: still down); a VM that is off never writes
        self.down: list[list[float]] = [] if spec.running else [[0.0, math.inf]]
        self.rng = rng

    def start_of(self) -> tuple:
        """What __init__ makes this disk again from (`start`; taken before it advances)."""
        return self.n, self.hot, self.rate, self.phase, self.rng.bit_generator.state

    def last_flush(self, t: float) -> float:
        """The last instant <= t at which the guest cache was flushed to disk."""
        periodic = 0.0
        if self.flush_s > 0 and t >= self.phase:
            periodic = self.phase + math.floor((t - self.phase) / self.flush_s) * self.flush_s
        elif self.flush_s <= 0:
            periodic = t  # write-through
        return max(periodic, self.explicit_flush if self.explicit_flush <= t else 0.0, self.t_mat)

    def running_time(self, a: float, b: float) -> float:
        total = b - a
        for s, e in self.down:
            lo, hi = max(a, s), min(b, e)
            if hi > lo:
                total -= hi - lo
        return max(0.0, total)


class DataPlane:
    def __init__(self, vms: list[VmSpec], streams: Streams, block_mib: float, flush: dict[str, float]):
        self.block_mib = block_mib
        rngs = streams.get_many([("vm", v.name, "data") for v in vms])  # (made together: kernel/rng.py)
        key = (streams.seed, block_mib, tuple(vms), tuple(flush[v.name] for v in vms))
        starts = _STARTS.get(key)
        if starts is None:
            disks = [VmDisk(v, block_mib, flush[v.name], rng) for v, rng in zip(vms, rngs, strict=True)]
            _STARTS.put(key, [d.start_of() for d in disks])
        else:
            disks = [VmDisk(v, block_mib, flush[v.name], rng, start) for v, rng, start in zip(vms, rngs, starts, strict=True)]
        self.disks = {v.name: d for v, d in zip(vms, disks, strict=True)}
        self.version_time: list[float] = [0.0]  # version id -> instant it stands for
        self.blocks_written = 0
        self.advances = 0

    # -- advancing --------------------------------------------------------------------------------
    def _advance(self, d: VmDisk, t: float) -> None:
        if t <= d.t_mat:
            return
        run = d.running_time(d.t_mat, t)
        if run > 0 and len(d.hot):
            p = -np.expm1(-d.rate * run)
            hit = d.hot[d.rng.random(len(d.hot)) < p]
            if len(hit):
                self.version_time.append(t)
                vid = len(self.version_time) - 1
                d.versions[hit] = vid
                self.blocks_written += len(hit)
        d.t_mat = t
        self.advances += 1

    def durable(self, vm: str, t: float) -> np.ndarray:
        """The VM's disk as the storage array holds it at t (writes up to the last flush)."""
        d = self.disks[vm]
        self._advance(d, d.last_flush(t))
        return d.versions.copy()

    def flush(self, vm: str, t: float) -> np.ndarray:
        """A flush at t (VSS freeze, fsfreeze, save state): every write up to t is on disk."""
        d = self.disks[vm]
        d.explicit_flush = max(d.explicit_flush, t)
        self._advance(d, t)
        return d.versions.copy()

    def pre_age(self, vm: str, seconds: float) -> np.ndarray:
        """A previous backup was taken `seconds` before t=0: write that much history into the disk
        (as version 1 and later, so a reference version of 0 separates it); returns the disk as
        that backup saw it."""
        d = self.disks[vm]
        before = d.versions.copy()
        if seconds > 0 and len(d.hot) and d.running_time(0.0, 1.0) > 0:
            p = -np.expm1(-d.rate * seconds)
            hit = d.hot[d.rng.random(len(d.hot)) < p]
            if len(hit):
                self.version_time.append(0.0)
                d.versions[hit] = len(self.version_time) - 1
        return before

    def follow(self, cm: Any) -> None:
        """Hear of what the cluster (cluster/model.py ClusterModel) does to the VMs: a VM lost (its
        host died, or its side lost quorum) stops writing and its guest cache is gone; a failed-over
        running VM that boots writes again."""
        running = {v.name for v in cm.vms if v.running}
        cm.on_vm_lost.connect(lambda vm, at_s: self.stop_writes(vm, at_s, crashed=True))
        cm.on_vm_restarted.connect(lambda vm: self.resume_writes(vm, cm.env.now) if vm in running else None)

    # -- run state ----------------------------------------------------------------------------------
    def stop_writes(self, vm: str, t: float, crashed: bool) -> None:
        """The VM stops writing at t: saved/paused (cache kept), or its host crashed (cache lost)."""
        d = self.disks[vm]
        if d.down and d.down[-1][1] == math.inf:
            return  # already not writing
        if crashed:
            t0 = d.last_flush(t)
            self._advance(d, t0)  # what reached the disk; the rest died in the guest cache
            d.down.append([t0, math.inf])
        else:
            self._advance(d, t)
            d.down.append([t, math.inf])

    def resume_writes(self, vm: str, t: float) -> None:
        d = self.disks[vm]
        if d.down and d.down[-1][1] == math.inf:
            d.down[-1][1] = t

    # -- change tracking ------------------------------------------------------------------------
    def current_version(self) -> int:
        """The newest version so far: every block materialised later has a higher version."""
        return len(self.version_time) - 1

    def changed_since(self, image: np.ndarray, version: int) -> np.ndarray:
        """Blocks of `image` written after the reference `version` (what change tracking reports)."""
        return np.flatnonzero(image > version)

    def block_count(self, vm: str) -> int:
        return self.disks[vm].n
