"""What each backup captures, in the data plane, at each capture point of its generation.

The generation modules call these at their steps; at the end of the job every captured VM is
restored (full, or the previous restore plus the changed blocks) and verified against the truth
recorded at its capture point (cluster_sim/data/verify.py).

- guest freeze (VSS) or fsfreeze: the guest flushes its cache; the disk right after is the
  application-consistent state (`truth_app`), with the guest's VSS metadata if VSS was used;
- ws2008r2/ws2012 host snapshot: the LUN as it is then; host auto-recovery reverts each VHD to
  the guest snapshot (`backup.auto_recovery`); without it the image is the later host state;
  an undetected hold-writes overrun (ws2008r2) leaves blocks written during the overrun torn;
- ws2012r2/ws2016 checkpoint: the parent VHDX is frozen at the checkpoint; the copy reads it;
- saved state: memory and disk saved together at that instant;
- RCT (ws2016 with VHDX and configuration version > 5.0): an incremental copies the blocks
  changed since the previous reference point; a lost RCT (crash) makes it a full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cluster_sim.data.verify import EXPECTED, Capture, restore, verify

if TYPE_CHECKING:
    from cluster_sim.backup.job import BackupJob


@dataclass
class Pending:
    meta_t: float | None = None
    app: np.ndarray | None = None  # disk right after the guest flush
    image: np.ndarray | None = None
    durable: list[np.ndarray] = field(default_factory=list)
    pre_set: np.ndarray | None = None  # durable state when the snapshot commit began
    changed: np.ndarray | None = None
    claim_t: float = 0.0
    reference: int | None = None  # RCT reference point to commit if this backup succeeds


class Captures:
    def __init__(self, job: BackupJob):
        self.job = job
        self.plane = job.cm.plane
        self.pending: dict[str, Pending] = {}
        self.done: dict[str, Capture] = {}

    @property
    def on(self) -> bool:
        return self.plane is not None

    def begin(self, vm: str) -> None:
        self.pending[vm] = Pending()

    # -- capture points -------------------------------------------------------------------------
    def freeze(self, vm: str, t: float, app: bool) -> None:
        if not self.on:
            return
        vec = self.plane.flush(vm, t)
        p = self.pending[vm]
        p.meta_t = t if app else None
        p.app = vec if app else None
        p.image = vec  # a checkpoint taken now freezes exactly this
        p.durable = [vec]
        p.claim_t = t

    def save(self, vm: str, t: float) -> None:
        """Saved state: memory (with the guest cache) and disk saved together."""
        if not self.on:
            return
        vec = self.plane.flush(vm, t)
        self.plane.stop_writes(vm, t, crashed=False, rct_survives=True)
        p = self.pending[vm]
        p.meta_t, p.app, p.image, p.durable, p.claim_t = t, vec, vec, [vec], t

    def resume(self, vm: str, t: float) -> None:
        if self.on:
            self.plane.resume_writes(vm, t)

    def checkpoint(self, vm: str, t: float, flushed: bool, rct: bool) -> None:
        """ws2012r2/ws2016: the parent disk freezes now (after a flush if the guest froze)."""
        if not self.on:
            return
        p = self.pending[vm]
        if not flushed or p.image is None:
            vec = self.plane.durable(vm, t)
            p.image, p.durable, p.meta_t, p.app, p.claim_t = vec, [vec], None, None, t
        if rct:  # the checkpoint becomes the reference point once this backup succeeds
            changed = self.plane.changed_since_reference(vm, p.image)
            p.changed = changed if self.job.mode == "incremental" else None
            p.reference = self.plane.current_version()

    def set_started(self, vm: str, t: float) -> None:
        if self.on:
            self.pending[vm].pre_set = self.plane.durable(vm, t)

    def host_snapshot(self, vm: str, t: float, auto_recovery: bool, torn_overrun: bool) -> None:
        """ws2008r2/ws2012: the host snapshot of the LUN, then auto-recovery (or not)."""
        if not self.on:
            return
        p = self.pending[vm]
        host = self.plane.durable(vm, t)
        if self.job.records[vm].plan.mode == "app" and p.app is not None:
            # auto-recovery reverts each VHD of the host snapshot to the guest snapshot
            image = p.app.copy() if auto_recovery else host.copy()
            p.durable = [host]
        else:  # saved state: nothing was written since the save
            image = host.copy()
        if torn_overrun and p.pre_set is not None:
            moved = np.flatnonzero(p.pre_set != host)
            if len(moved):
                rng = self.job.cm.streams.get("vm", vm, "torn")
                torn = moved[rng.random(len(moved)) < 0.5]
                image[torn] = host[torn]  # written while writes were not really held
        p.image = image

    def offline(self, vm: str, t: float) -> None:
        if not self.on:
            return
        vec = self.plane.durable(vm, t)
        self.pending[vm] = Pending(meta_t=t, app=vec, image=vec, durable=[vec], claim_t=t)

    # -- copying and verifying ------------------------------------------------------------------
    def bytes_to_copy(self, vm: str) -> float | None:
        """MiB the copy reads: the changed blocks of an incremental, else every block."""
        if not self.on:
            return None
        p = self.pending.get(vm)
        blocks = self.plane.block_count(vm)
        if p is not None and p.changed is not None and vm in self.job.cm.chains:
            blocks = len(p.changed)
        return blocks * self.plane.block_mib

    def succeeded(self, vm: str) -> None:
        if not self.on:
            return
        p = self.pending.pop(vm, None)
        if p is None or p.image is None:
            return
        changed = p.changed if vm in self.job.cm.chains else None
        if p.reference is not None:
            self.plane.commit_reference(vm, p.reference)
        self.done[vm] = Capture(image=p.image, claim_t=p.claim_t, meta_t=p.meta_t, truth_app=p.app,
                                truth_durable=p.durable, changed=changed)

    def verify_all(self) -> dict[str, str]:
        """Restore every backed-up VM from its chain and classify it."""
        verdicts: dict[str, str] = {}
        chains = self.job.cm.chains
        for vm in sorted(self.done):
            cap = self.done[vm]
            restored = restore(chains.get(vm), cap)
            verdicts[vm] = verify(restored, cap)
            chains[vm] = restored
        return verdicts


def expected_verdict(outcome: str) -> str | None:
    return EXPECTED.get(outcome)
