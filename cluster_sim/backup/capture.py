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
- change tracking (backup/tracking.py: RCT on ws2016, a vendor's filter driver before): an
  incremental copies the blocks changed since the VM's reference point, decided at its capture
  point; a lost map makes it a full, RCT after a host crash copies whole regions.

The copy plan (full or incremental, and why) is kept without the data plane too: without it the
bytes come from the analytic change model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cluster_sim.backup.tracking import CopyPlan, regions
from cluster_sim.cluster.writes import changed_mib
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
    reference: int | None = None  # data-plane version of the capture point (the next reference)
    plan: CopyPlan | None = None  # what the copy reads, decided at the capture point
    capture_s: float | None = None  # the capture point's time (analytic bytes, next reference)


class Captures:
    def __init__(self, job: BackupJob):
        self.job = job
        self.plane = job.ctx.plane
        self.pending: dict[str, Pending] = {}
        self.done: dict[str, Capture] = {}

    @property
    def on(self) -> bool:
        return self.plane is not None

    def begin(self, vm: str) -> None:
        self.pending[vm] = Pending()

    def _materialised(self, p: Pending, t: float) -> None:
        """The first disk state of this capture was read at t: changes after it are newer."""
        if p.capture_s is None:
            p.capture_s = t
            p.reference = self.plane.current_version() if self.on else 0

    def _plan(self, vm: str, t: float) -> None:
        """The capture point is final: decide what the copy reads (tracker), and which blocks."""
        p = self.pending[vm]
        self._materialised(p, t)
        plan = self.job.tracker.plan(vm, self.job.mode)
        if plan.kind != "full" and self.on and vm not in self.job.ctx.chains:
            plan = CopyPlan("full", "no_previous_backup")  # nothing restored to apply changes to
        p.plan = plan
        if self.on and plan.kind != "full" and p.image is not None:
            changed = self.plane.changed_since(p.image, plan.ref_version)
            if plan.kind == "incremental_regions":
                changed = regions(changed, self.job.cfg.rct_region_blocks, len(p.image))
            p.changed = changed
        else:
            p.changed = None

    # -- capture points -------------------------------------------------------------------------
    def freeze(self, vm: str, t: float, app: bool) -> None:
        p = self.pending[vm]
        if not self.on:
            self._materialised(p, t)
            return
        vec = self.plane.flush(vm, t)
        self._materialised(p, t)
        p.meta_t = t if app else None
        p.app = vec if app else None
        p.image = vec  # a checkpoint taken now freezes exactly this
        p.durable = [vec]
        p.claim_t = t

    def save(self, vm: str, t: float) -> None:
        """Saved state: memory (with the guest cache) and disk saved together."""
        p = self.pending[vm]
        if not self.on:
            self._materialised(p, t)
            return
        vec = self.plane.flush(vm, t)
        self.plane.stop_writes(vm, t, crashed=False)
        self._materialised(p, t)
        p.meta_t, p.app, p.image, p.durable, p.claim_t = t, vec, vec, [vec], t

    def resume(self, vm: str, t: float) -> None:
        if self.on:
            self.plane.resume_writes(vm, t)

    def checkpoint(self, vm: str, t: float, flushed: bool) -> None:
        """ws2012r2/ws2016: the parent disk freezes now (after a flush if the guest froze)."""
        p = self.pending[vm]
        if self.on and (not flushed or p.image is None):
            vec = self.plane.durable(vm, t)
            p.capture_s = None  # the image is this durable state, not an earlier freeze
            self._materialised(p, t)
            p.image, p.durable, p.meta_t, p.app, p.claim_t = vec, [vec], None, None, t
        elif not flushed:
            p.capture_s = None
        self._plan(vm, t)

    def set_started(self, vm: str, t: float) -> None:
        if self.on:
            self.pending[vm].pre_set = self.plane.durable(vm, t)

    def host_snapshot(self, vm: str, t: float, auto_recovery: bool, torn_overrun: bool) -> None:
        """ws2008r2/ws2012: the host snapshot of the LUN, then auto-recovery (or not)."""
        p = self.pending[vm]
        if not self.on:
            self._plan(vm, t)
            return
        host = self.plane.durable(vm, t)
        self._materialised(p, t)
        if self.job.records[vm].plan.mode == "app" and p.app is not None:
            # auto-recovery reverts each VHD of the host snapshot to the guest snapshot
            image = p.app.copy() if auto_recovery else host.copy()
            p.durable = [host]
        else:  # saved state: nothing was written since the save
            image = host.copy()
        if torn_overrun and p.pre_set is not None:
            moved = np.flatnonzero(p.pre_set != host)
            if len(moved):
                rng = self.job.ctx.streams.get("vm", vm, "torn")
                torn = moved[rng.random(len(moved)) < 0.5]
                image[torn] = host[torn]  # written while writes were not really held
        p.image = image
        self._plan(vm, t)

    def offline(self, vm: str, t: float) -> None:
        if self.on:
            vec = self.plane.durable(vm, t)
            self.pending[vm] = Pending(meta_t=t, app=vec, image=vec, durable=[vec], claim_t=t)
        else:
            self.pending[vm] = Pending()
        self._plan(vm, t)

    # -- copying and verifying ------------------------------------------------------------------
    def copy_plan(self, vm: str) -> CopyPlan:
        p = self.pending.get(vm)
        return p.plan if p is not None and p.plan is not None else CopyPlan("full")

    def bytes_to_copy(self, vm: str) -> float:
        """MiB the copy reads: the changed blocks of an incremental, else every block (whole
        data-plane blocks with the data plane; else the used data and the analytic change model)."""
        p = self.pending.get(vm)
        plan = self.copy_plan(vm)
        spec = self.job.records[vm].spec
        if self.on:
            if p is not None and p.changed is not None:
                return len(p.changed) * self.plane.block_mib
            return self.plane.block_count(vm) * self.plane.block_mib
        if plan.kind == "full":
            return spec.used_mib
        since = (p.capture_s if p is not None and p.capture_s is not None else self.job.env.now) - plan.since_s
        mib = changed_mib(spec, self.job.cm.block_size_mib, since) if spec.running else 0.0
        if plan.kind == "incremental_regions":
            mib *= self.job.cfg.rct_region_blocks  # at most every block of each touched region [P]
        return min(mib, spec.used_mib)

    def succeeded(self, vm: str) -> None:
        p = self.pending.pop(vm, None)
        if p is None:
            return
        if p.capture_s is not None:  # this backup's capture point is the next reference
            self.job.tracker.commit(vm, p.reference or 0, p.capture_s)
        if not self.on or p.image is None:
            return
        changed = p.changed if vm in self.job.ctx.chains else None
        self.done[vm] = Capture(image=p.image, claim_t=p.claim_t, meta_t=p.meta_t, truth_app=p.app,
                                truth_durable=p.durable, changed=changed)

    def verify_all(self) -> dict[str, str]:
        """Restore every backed-up VM from its chain and classify it."""
        verdicts: dict[str, str] = {}
        chains = self.job.ctx.chains
        for vm in sorted(self.done):
            cap = self.done[vm]
            restored = restore(chains.get(vm), cap)
            verdicts[vm] = verify(restored, cap)
            chains[vm] = restored
        return verdicts


def expected_verdict(outcome: str) -> str | None:
    return EXPECTED.get(outcome)
