"""Mixed-version clusters in the backup (cluster OS rolling upgrade): each VM is backed up by the
mechanism its host can give it, limited by the functional level and its configuration version:

    mechanism(vm) = min(generation the run names, host's Windows version, functional level,
                        ws2016 if configuration above 5.0 else ws2012r2)

- A VM on a 2016 node, at functional level ws2016, of configuration above 5.0 gets the ws2016
  path: a production checkpoint, one snapshot set for every such VM, RCT [MS, seeds].
- Any other VM gets the 2012 R2 path (per-VM or per-batch VSS with an AVHDX checkpoint and a
  storage snapshot per batch, the vendor's filter for change tracking): on a 2012 R2 node
  (`node_runs_ws2012r2`), on a 2016 node at level ws2012r2 (`rct_unavailable_functional_level`),
  or with configuration 5.0 ("might be taken to a host running 2012 R2, which doesn't understand
  RCT", `rct_unavailable_config_version_5`) [seeds].
A run names the newest mechanism the backup design may use (`-g ws2016` on a mixed cluster: each
VM gets the newest it can); with a name older than ws2016 every VM gets that one, as before.

The mechanism is chosen when the job starts and again for each retry (the VM may have moved).
When a VM's change tracking changes kind (filter map -> RCT after its configuration upgrade, or RCT
-> a node that cannot use it), its next copy is a full (backup/tracking.py `switch`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cluster_sim.backup import ws2012r2, ws2016
from cluster_sim.backup.eligibility import plan
from cluster_sim.backup.phases import start_pipeline
from cluster_sim.scenario import GENERATIONS
from cluster_sim.scenario.versions import needs_2016

if TYPE_CHECKING:
    from cluster_sim.backup.context import BackupContext
    from cluster_sim.backup.job import BackupJob
    from cluster_sim.backup.ledger import Proc
    from cluster_sim.cluster.model import ClusterModel
    from cluster_sim.scenario import Backup
    from cluster_sim.scenario.placement import VmSpec

RANK = {g: i for i, g in enumerate(GENERATIONS)}
NODE_REASON = "node_runs_ws2012r2"
LEVEL_REASON = "rct_unavailable_functional_level"
CONFIG_REASON = "rct_unavailable_config_version_5"
SWITCH_TO_RCT = "rct_first_backup_after_upgrade"  # the first RCT copy of a VM that had a filter map
RCT_UNUSABLE = "rct_lost_node_without_rct"  # an RCT map on a node whose mechanism cannot use it


def mechanism(cm: ClusterModel, vm: str, named: str, node: str | None = None) -> tuple[str, str]:
    """(mechanism, why it is older than the one the run names: "" when it is not)."""
    host = node or cm.host_of(vm)
    limits = (
        (cm.node_version(host) or named, NODE_REASON),
        (cm.functional_level() or named, LEVEL_REASON),
        ("ws2016" if needs_2016(cm.vm_config_version(vm)) else "ws2012r2", CONFIG_REASON),
    )
    gen, why = named, ""
    for ver, reason in limits:
        if RANK[ver] < RANK[gen]:
            gen, why = ver, reason
    return gen, why


def tracking_of(cfg: Backup, spec: VmSpec, gen: str) -> str:
    """The change tracking a VM backed up by `gen` has: RCT on the ws2016 path (no .vhd disk) [seeds],
    else the vendor's filter (backup/tracking.py)."""
    if gen == "ws2016":
        return "rct" if all(d.format != "vhd" for d in spec.disks) else "none"
    return "filter" if cfg.change_tracking == "vendor_filter" else "none"


class MixedBackup:
    """A generation's run on a mixed-version cluster: each VM's mechanism per job, and the nights."""

    def __init__(self, ctx: BackupContext):
        self.ctx = ctx
        self.cm = ctx.cm
        self.named = ctx.generation
        self.spec = {v.name: v for v in self.cm.vms}
        self.assigned: dict[int, dict[str, tuple[str, str]]] = {}  # job index -> vm -> (mechanism, why)
        self.at_start: dict[int, dict[str, Any]] = {}  # job index -> the cluster's versions when it began
        for v in self.cm.vms:  # change tracking at t=0 (a schedule may start with an incremental)
            gen, _ = mechanism(self.cm, v.name, self.named)
            ctx.tracker.kind[v.name] = tracking_of(ctx.cfg, v, gen)

    # -- each VM's mechanism -------------------------------------------------------------------------
    def assign(self, job: BackupJob, vm: str) -> str:
        """Choose the VM's mechanism now (its host now), re-plan what it gets, switch its tracking."""
        gen, why = mechanism(self.cm, vm, self.named)
        self.assigned.setdefault(job.index, {})[vm] = (gen, why)
        rec = job.records[vm]
        rec.plan = plan(rec.spec, gen, job.cfg.allow_standard_checkpoint_fallback)
        if self.ctx.guest is not None:  # a guest cluster's shared disk the mechanism cannot take
            self.ctx.guest.adjust(job, vm, gen)
        kind = tracking_of(self.ctx.cfg, rec.spec, gen)
        self.ctx.tracker.switch(vm, kind, SWITCH_TO_RCT if kind == "rct" else RCT_UNUSABLE)
        return gen

    def plan_job(self, job: BackupJob) -> None:
        """At the job's creation: every VM's mechanism and plan (offline and failing VMs are settled
        by BackupJob.run before the body starts)."""
        for vm in sorted(job.records):
            self.assign(job, vm)

    def wrap(self, body: Callable[[BackupJob], Proc]) -> Callable[[BackupJob], Proc]:
        """The job's body on a mixed cluster: ws2016 runs both paths side by side; an older named
        generation gives every VM that generation (its own body)."""

        def mixed_body(job: BackupJob) -> Proc:
            self.at_start[job.index] = {"level": self.cm.functional_level(), **self.cm.version_counts()}
            if self.named != "ws2016":
                yield from body(job)
                return
            vms = job.online_vms()
            gens = {vm: self.assign(job, vm) for vm in vms}
            for vm in vms:
                if job.records[vm].plan.mode == "fail":  # its host changed its plan since the job was made
                    job.begin(vm)
                    job.finalize(vm, "failed", job.records[vm].plan.reason)
            vms = [vm for vm in vms if job.records[vm].outcome is None]
            new = [vm for vm in vms if gens[vm] == "ws2016"]
            old = [vm for vm in vms if gens[vm] != "ws2016"]
            retry_new = ws2016.start(job, new)
            retry_old = start_pipeline(job, ws2012r2.PHASES, old)

            def retry(vm: str) -> None:
                (retry_new if self.assign(job, vm) == "ws2016" else retry_old)(vm)

            job.retry_hook = retry
            yield job.done

        return mixed_body

    # -- results ----------------------------------------------------------------------------------------
    def on_rct(self, index: int) -> int:
        """VMs of a job backed up on the ws2016 path with RCT."""
        return sum(1 for vm, (gen, _) in self.assigned.get(index, {}).items()
                   if gen == "ws2016" and tracking_of(self.ctx.cfg, self.spec[vm], gen) == "rct")

    def nights(self, jobs: list[BackupJob], summaries: list[Any]) -> list[dict[str, Any]]:
        out = []
        for job, js in zip(jobs, summaries, strict=True):
            got = self.assigned.get(job.index, {})
            mech = Counter(gen for gen, _ in got.values())
            start = self.at_start.get(job.index, {})
            n = len(job.records)
            out.append({
                "job": job.index, "mode": job.mode, "start_s": js.start_s,
                "functional_level": start.get("level", ""),
                "nodes_ws2016": start.get("ws2016", 0), "nodes_ws2012r2": start.get("ws2012r2", 0),
                "nodes_upgrading": start.get("upgrading", 0),
                "backup_window_s": js.backup_window_s, "bytes_copied_mib": js.bytes_copied_mib,
                "storage_snapshots": job.lun_snapshots_in_sets, "snapshot_sets": job.snapshot_sets,
                "vms_ws2016_path": mech.get("ws2016", 0), "vms_ws2012r2_path": mech.get("ws2012r2", 0),
                "vms_on_rct": self.on_rct(job.index),
                "rct_share": round(self.on_rct(job.index) / n, 6) if n else 0.0,
                "full_copies": js.full_copies,
            })
        return out

    def last(self, jobs: list[BackupJob]) -> dict[str, tuple[str, str]]:
        return self.assigned.get(jobs[-1].index, {}) if jobs else {}
