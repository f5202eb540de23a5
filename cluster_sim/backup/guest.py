"""Guest clusters: VMs that share disks (a template's `guest_cluster`), backed up at host level.

- Shared VHDX (format `vhdx`), or a VHD Set on a VM not backed up by the ws2016 mechanism: host-level
  backup cannot take the shared disk [MS]. With `backup.shared_vhdx_policy: skip_shared_disk` each
  member is backed up without it (its outcome stands, its reason says `shared_vhdx_not_supported`);
  with `fail` each member fails with that reason.
- VHD Set (format `vhds`) on the ws2016 mechanism [seeds, MS]: the set is checkpointed once for the
  whole guest cluster through the VHDS file, at the first member's capture point of the round, and
  the shared disk is copied once (with the first member's copy), not per member; RCT applies to it
  (an incremental copies what changed since the guest cluster's previous shared capture).
- A restore of a guest cluster is consistent when every member's view of the shared disk is from
  the same instant: the members backed up in one round share one VHD Set checkpoint; a member that
  was retried in a later round sees another instant (`restores_inconsistent`).

The shared disk's contents are not in the data plane: its bytes come from the analytic change
model (`daily_change_fraction` of its used data per day) [P].
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from cluster_sim.backup.eligibility import Plan

if TYPE_CHECKING:
    from cluster_sim.backup.context import BackupContext
    from cluster_sim.backup.job import BackupJob

REASON = "shared_vhdx_not_supported"
DAY_S = 86400.0


class GuestClusters:
    def __init__(self, ctx: BackupContext):
        self.ctx = ctx
        self.members: dict[str, list[str]] = defaultdict(list)  # guest cluster -> its VMs
        self.spec = {v.name: v for v in ctx.cm.vms if v.guest_cluster}
        for v in ctx.cm.vms:
            if v.guest_cluster:
                self.members[v.guest_cluster].append(v.name)
        self.skipped: dict[int, set[str]] = defaultdict(set)  # job -> members backed up without the shared disk
        self.failed: dict[int, set[str]] = defaultdict(set)  # job -> members failed for it
        self.instant: dict[int, dict[str, float]] = defaultdict(dict)  # job -> member -> its shared disk's instant
        self.copies: dict[tuple[int, str, int], str] = {}  # (job, guest cluster, round) -> member that copied it
        self.shared_mib: dict[int, float] = defaultdict(float)  # job -> shared-disk MiB copied
        self.last_s: dict[str, float] = {}  # guest cluster -> its previous shared capture (RCT reference)

    def supported(self, vm: str, mechanism: str) -> bool:
        """Can host-level backup take this member's shared disks (VHD Sets on the ws2016 mechanism)?"""
        return mechanism == "ws2016" and all(d.format == "vhds" for d in self.spec[vm].shared_disks)

    def adjust(self, job: BackupJob, vm: str, mechanism: str) -> None:
        """Apply the policy to a member's plan (after its mechanism and plan are chosen)."""
        if vm not in self.spec:
            return
        self.skipped[job.index].discard(vm)
        self.failed[job.index].discard(vm)
        rec = job.records[vm]
        if self.supported(vm, mechanism) or rec.plan.mode in ("offline", "fail"):
            return
        if job.cfg.shared_vhdx_policy == "fail":
            rec.plan = Plan("fail", REASON)
            self.failed[job.index].add(vm)
        else:
            self.skipped[job.index].add(vm)

    def mechanism(self, job: BackupJob, vm: str) -> str:
        """The mechanism backing the member up in this job (backup/mixed.py on a mixed cluster)."""
        mixed = self.ctx.mixed
        if mixed is not None and vm in mixed.assigned.get(job.index, {}):
            return str(mixed.assigned[job.index][vm][0])
        return self.ctx.generation

    def plan_job(self, job: BackupJob) -> None:
        for vm in sorted(self.spec):
            self.adjust(job, vm, self.mechanism(job, vm))

    def shared_bytes(self, job: BackupJob, vm: str) -> float:
        """What this member's copy reads of the shared disks: all of it for the first member of the
        guest cluster copying in this round, nothing for the others (or when it is not supported)."""
        spec = self.spec.get(vm)
        if spec is None or not self.supported(vm, self.mechanism(job, vm)):
            return 0.0
        gc, rnd = spec.guest_cluster, job.records[vm].attempts
        peers = [m for m in self.members[gc] if job.records[m].attempts == rnd
                 and job.cap.pending.get(m) is not None and job.cap.pending[m].capture_s is not None]
        t = min(job.cap.pending[m].capture_s for m in peers)  # the VHD Set checkpoint: the first member's
        self.instant[job.index][vm] = t
        key = (job.index, gc, rnd)
        if key in self.copies:
            return 0.0
        self.copies[key] = vm
        used = sum(d.used_mib for d in spec.shared_disks)
        plan = job.cap.pending[vm].plan
        prev = self.last_s.get(gc)
        if plan is None or plan.kind == "full" or prev is None:
            mib = used
        else:
            mib = min(used, used * spec.daily_change_fraction * max(0.0, t - prev) / DAY_S)
        self.last_s[gc] = t
        self.shared_mib[job.index] += mib
        job.trace("vhds_checkpoint_copied", vm=vm, guest_cluster=gc, at_s=round(t, 6), mib=round(mib, 3))
        return mib

    # -- results ----------------------------------------------------------------------------------
    def summary(self, job: BackupJob) -> dict[str, Any]:
        """The last job's guest clusters: how their shared disks were treated and their restores."""
        consistent = inconsistent = incomplete = 0
        inst = self.instant.get(job.index, {})
        for _gc, vms in sorted(self.members.items()):
            if not any(vm in inst for vm in vms):
                continue  # its shared disk was not backed up (skipped, failed, or never reached)
            if any(job.records[vm].outcome in (None, "failed") or vm not in inst for vm in vms):
                incomplete += 1
            elif len({inst[vm] for vm in vms}) == 1:
                consistent += 1
            else:
                inconsistent += 1
        return {
            "guest_clusters": len(self.members),
            "members": len(self.spec),
            "members_without_shared_disk": len(self.skipped.get(job.index, ())),
            "members_failed": len(self.failed.get(job.index, ())),
            "vhds_checkpoints": sum(1 for (j, _g, _r) in self.copies if j == job.index),
            "shared_copied_mib": round(self.shared_mib.get(job.index, 0.0), 6),
            "restores_consistent": consistent,
            "restores_inconsistent": inconsistent,
            "restores_incomplete": incomplete,
        }

    def reason(self, job: BackupJob, vm: str) -> str:
        """vms.csv's reason for a member backed up without its shared disk."""
        return REASON if vm in self.skipped.get(job.index, ()) else ""
