"""The phases a per-VM (or per-batch) VSS backup is built from (ws2008r2, ws2012, ws2012r2), and the
pipeline that runs them. Each generation module lists its phases in order; this module says what
each phase does.

Each node works through its own VMs in the groups its policy makes (backup/policy.py; built in: by
CSV, batches of `vms_per_snapshot`; one shadow-copy set, one storage snapshot per batch). A batch
runs its phases one after the other; a phase runs while some VM of the batch is still live (unless
it is marked `always`: the thaw that must follow a snapshot, the release of the VSS lock), and a
failure of the whole batch (`abort`) ends it at once. Whatever the batch still holds when it ends
is released by `clean_up` (the same for every generation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import simpy

from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.ledger import Outcome, Proc, SetResult, StepFailed
from cluster_sim.backup.policy import check_groups, check_order, paced, park_held
from cluster_sim.cluster.storage import Checkpoint, StorageSnapshot


@dataclass
class Batch:
    """One batch's state as its phases go: the VMs still live in it and what it holds."""

    job: BackupJob
    node: str
    csv: str
    vms: list[str]
    live: list[str]
    vol: Any  # cluster/csv.py the CSV's volume
    stopped: bool = False  # the whole batch failed: no further phase runs
    pin: Any = None  # ws2008r2: the CSV pinned to this node in redirected access
    lock: Any = None  # the node's VSS lock (one set creation per node [MS])
    lock_held: bool = False
    critical: bool = False  # its VMs are in their critical section (migrations wait) [V]
    t_freeze: float = 0.0
    frozen: list[str] = field(default_factory=list)  # guests frozen for VSS now
    saved_at: dict[str, float] = field(default_factory=dict)  # VMs in saved state -> since
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)  # ws2012r2: AVHDX per VM
    res: SetResult | None = None
    snap: StorageSnapshot | None = None
    surfaced: bool = False
    leak_on_failover: bool = False  # ws2012: KB2878635

    def drop(self, vm: str, reason: str) -> None:
        """This VM's attempt fails; the batch goes on without it."""
        if vm in self.live:
            self.live.remove(vm)
            self.job.fail(vm, reason)

    def abort(self, reason: str) -> None:
        """The whole batch fails: every live VM's attempt fails and no further phase runs."""
        for vm in list(self.live):
            self.drop(vm, reason)
        self.stopped = True

    def mode(self, vm: str) -> str:
        return self.job.records[vm].plan.mode

    @property
    def app_vms(self) -> list[str]:
        return [vm for vm in self.live if self.mode(vm) == "app"]


PhaseFn = Callable[[BackupJob, Batch], Proc]


@dataclass(frozen=True)
class Phase:
    name: str
    run: PhaseFn
    always: bool = False  # runs even when no VM of the batch is live (not after an abort)


# ---- the phases, in the order the generations use them -------------------------------------------
def pin_csv() -> Phase:
    """ws2008r2: the CSV moves to the backup node and goes into redirected access first; the
    shadow-copy set starts once the node owns it. The pin lasts until the batch ends [MS]."""

    def run(job: BackupJob, b: Batch) -> Proc:
        if not job.cm.has_fabric(b.node):  # a node without its storage fabric cannot own the CSV
            b.abort("storage_path_lost")
            return
        b.pin = yield b.vol.pin(b.node)

    return Phase("pin_csv", run)


def take_vss_lock() -> Phase:
    """One shadow-copy set creation per node at a time [MS]; from here to the end of auto-recovery
    the batch's VMs are in their critical section (a migration waits, or aborts the backup) [V]."""

    def run(job: BackupJob, b: Batch) -> Proc:
        try:
            b.lock = yield from job.acquire_vss(b.node)
        except StepFailed as exc:
            if b.pin is not None:
                b.vol.release(b.pin)
                b.pin = None
            b.abort(exc.reason)
            return
        b.lock_held = True
        b.critical = True
        job.critical.update(b.vms)

    return Phase("take_vss_lock", run)


def enumerate_writers() -> Phase:
    """Every node's Hyper-V writer enumerates its VMs before the set (KB4014317) [MS]."""

    def run(job: BackupJob, b: Batch) -> Proc:
        try:
            yield from job.writer_enumeration(b.node)
        except StepFailed as exc:
            b.abort(exc.reason)
            return
        b.t_freeze = job.env.now

    return Phase("enumerate_writers", run)


def _each_vm(b: Batch, attempts: dict[str, Any]) -> Proc:
    """Wait for a step started on every VM of the batch at once; a VM whose step failed leaves the batch."""
    for vm, p in attempts.items():
        failed = yield p
        if failed is not None:
            b.drop(vm, failed.reason)


def prepare_vms(avhdx_checkpoint: bool = False, refuse_autorecovery_leftover: bool = False) -> Phase:
    """Every VM of the batch at once: guest VSS freeze (application-consistent, or a Linux
    file-system freeze), or saved state (VMs that cannot be backed up online) [MS]; with
    `avhdx_checkpoint` (ws2012r2) the guest snapshot becomes an AVHDX checkpoint at that instant
    [seeds]. A VM with a leftover AutoRecovery.avhdx fails (0x800423FB) [MS]."""

    def prepare(job: BackupJob, b: Batch, vm: str) -> Proc:
        env, node = job.env, b.node
        job.trace("vm_prepare", vm=vm, node=node)
        if refuse_autorecovery_leftover and job.server is not None and vm in job.server.autorecovery_leftover:
            raise StepFailed("autorecovery_avhdx_leftover", vm)
        mode = b.mode(vm)
        if mode == "saved_state":
            yield from job.save_state(vm, node)
            b.saved_at[vm] = env.now - job.cfg.saved_state_downtime_s / 2
            return
        spec = job.records[vm].spec
        if mode == "app" or spec.guest_os == "linux" and spec.integration_services:
            yield from job.guest_freeze(vm, node, app=(mode == "app"))
            b.frozen.append(vm)
        if avhdx_checkpoint:
            with job.span("checkpoint", vm, node):
                yield env.timeout(job.cfg.checkpoint_create_s)
            b.checkpoints[vm] = job.create_checkpoint(vm, "backup")
            job.cap.checkpoint(vm, env.now, flushed=vm in b.frozen)

    def run(job: BackupJob, b: Batch) -> Proc:
        yield from _each_vm(b, {vm: job.attempt(prepare(job, b, vm)) for vm in b.vms})

    return Phase("prepare_vms", run)


def coordinate_with_owner() -> Phase:
    """The node taking the snapshot coordinates with the CSV's owner when it is not the owner [seeds]."""

    def run(job: BackupJob, b: Batch) -> Proc:
        if b.vol.coordinator != b.node:
            yield job.env.timeout(job.cfg.csv_owner_coordination_s)

    return Phase("coordinate_with_owner", run)


def commit_snapshot(metadata_redirect: bool, detects_hold_overrun: bool, capture_here: bool,
                    leak_on_failover: bool = False) -> Phase:
    """The host's shadow-copy set: one hardware snapshot of the CSV's LUN, committed by the array
    as one consistency group. With `metadata_redirect` (ws2012+) the CSV is redirected to its
    coordinator for the metadata operation only [MS]. The Hyper-V writer allows at most
    `writer_freeze_limit_s` from freeze to thaw [MS]. A commit past `hold_writes_limit_s` is
    detected (ws2012+, VSS_E_HOLD_WRITES_TIMEOUT) or, on ws2008r2, not: the capture is claimed
    consistent but silently torn [MS]. `capture_here`: the VMs' backup point is this snapshot (not
    an earlier checkpoint). `leak_on_failover`: KB2878635 (ws2012) [MS]."""

    def run(job: BackupJob, b: Batch) -> Proc:
        env = job.env
        b.leak_on_failover = leak_on_failover
        meta = b.vol.hold("metadata", b.node) if metadata_redirect else None
        t_meta = env.now
        if not detects_hold_overrun:
            for vm in b.live:  # what the disk held when the commit began (an overrun tears from here)
                job.cap.set_started(vm, env.now)
        try:
            b.res = yield from job.snapshot_set(b.node, [b.csv], tuple(b.live), job.new_set_id(),
                                                leak_on_failover=leak_on_failover)
        except StepFailed as exc:
            b.abort(exc.reason)
            return
        finally:
            if meta is not None:
                job.track(release_after(job, b.vol, meta, t_meta + job.cfg.csv_metadata_redirect_s))
        res = b.res
        b.snap = res.snaps[b.csv]
        for vm in b.live:
            job.records[vm].snapshot_id = b.snap.sid
            if capture_here:
                job.cap.host_snapshot(vm, env.now, job.cfg.auto_recovery,
                                      torn_overrun=res.over_hold_limit and not detects_hold_overrun)
        if env.now - b.t_freeze > job.cfg.writer_freeze_limit_s:
            for vm in [v for v in b.live if b.mode(v) == "app"]:
                b.drop(vm, "vss_writer_timeout")
        if res.over_hold_limit:
            if detects_hold_overrun:
                for vm in list(b.live):
                    b.drop(vm, "vss_hold_writes_timeout")
            else:
                for vm in b.live:
                    if b.mode(vm) != "saved_state":  # a saved VM writes nothing
                        job.records[vm].torn = True  # not detected: claimed consistent, silently torn [MS]

    return Phase("commit_snapshot", run)


def thaw_and_resume() -> Phase:
    """The frozen guests thaw and the saved VMs run again (each after the rest of its downtime)."""

    def run(job: BackupJob, b: Batch) -> Proc:
        for vm in b.frozen:
            job.thaw(vm, b.node)
        b.frozen.clear()
        resumes = [job.spawn(job.resume_state(vm, b.node, b.saved_at.pop(vm))) for vm in list(b.saved_at)]
        if resumes:
            yield simpy.AllOf(job.env, resumes)

    return Phase("thaw_and_resume", run, always=True)


def surface_snapshot() -> Phase:
    """The snapshot LUN is surfaced on this host (inside the VSS lock) [V]; a VM that moved or whose
    host left meanwhile fails."""

    def run(job: BackupJob, b: Batch) -> Proc:
        assert b.snap is not None
        b.surfaced = True
        try:
            yield from job.surface(b.node, [b.snap])
        except StepFailed as exc:
            b.abort(exc.reason)
            return
        for vm in list(b.live):
            try:
                job.ensure_host(vm, b.node)
            except StepFailed as exc:
                b.drop(vm, exc.reason)

    return Phase("surface_snapshot", run)


def host_auto_recovery() -> Phase:
    """ws2008r2/ws2012: every VHD of the application-consistent VMs is mounted on the host, reverted
    to the guest snapshot and dismounted (with `auto_recovery`) [MS, seeds]."""

    def run(job: BackupJob, b: Batch) -> Proc:
        app_vms = b.app_vms
        if app_vms and job.cfg.auto_recovery:
            failed = yield from job.host_auto_recovery(b.node, app_vms)
            for vm, reason in failed.items():
                b.drop(vm, reason)

    return Phase("host_auto_recovery", run)


def scsi_fixup() -> Phase:
    """ws2012r2: AutoRecovery.vhdx hot-added over each application-consistent VM's SCSI controller
    and fixed up inside the guest (no SCSI controller: Event 10103) [seeds]."""

    def run(job: BackupJob, b: Batch) -> Proc:
        yield from _each_vm(b, {vm: job.attempt(job.scsi_fixup(vm, b.node)) for vm in b.app_vms})

    return Phase("scsi_fixup", run)


def release_vss_lock() -> Phase:
    """The set is complete: the node's VSS lock goes and the VMs may move again."""

    def run(job: BackupJob, b: Batch) -> Proc:
        job.release_vss(b.node, b.lock)
        b.lock_held = False
        job.critical.difference_update(b.vms)
        return
        yield  # (a phase is a process)

    return Phase("release_vss_lock", run, always=True)


def copy_each_vm() -> Phase:
    """Each VM is copied from the snapshot (in the node's copy slots), then its AVHDX (ws2012r2) is
    merged; its outcome is what its preparation made of it."""

    def run(job: BackupJob, b: Batch) -> Proc:
        assert b.snap is not None
        copies = [job.spawn(_copy_one(job, b.node, vm, b.snap, b.checkpoints.pop(vm, None))) for vm in list(b.live)]
        if copies:
            yield simpy.AllOf(job.env, copies)

    return Phase("copy_each_vm", run)


def _copy_one(job: BackupJob, node: str, vm: str, snap: StorageSnapshot, cp: Checkpoint | None) -> Proc:
    try:
        yield from job.copy_in_slot(vm, node, snap)
    except StepFailed as exc:
        if cp is not None:
            job.discard_checkpoint(cp)
        job.fail(vm, exc.reason)
        return
    if cp is not None:
        yield from job.merge(vm, cp)
    rec = job.records[vm]
    outcome = {"app": Outcome.APP_CONSISTENT, "crash": Outcome.CRASH_CONSISTENT,
               "saved_state": Outcome.SAVED_STATE}[rec.plan.mode]
    job.finalize(vm, outcome, rec.plan.reason)


def clean_up(job: BackupJob, b: Batch) -> None:
    """What the batch still holds when it ends, however it ends: frozen guests thaw, saved VMs run
    again, unmerged checkpoints are merged away, the VSS lock goes, the snapshot is disposed of (or
    leaked by a node failure, KB2878635), the CSV pin goes (a dead backup node leaves the CSV
    marked "backup in progress" [MS])."""
    if b.critical:
        job.critical.difference_update(b.vms)
    if job.dead:  # a dead job leaves what it holds (BackupJob.kill says what becomes of it)
        b.frozen, b.saved_at, b.checkpoints, b.lock_held, b.snap, b.pin = [], {}, {}, False, None, None
    cm = job.cm
    node_dead = not cm.is_alive(b.node)
    for vm in b.frozen:
        job.thaw(vm, b.node)
    for vm, t in list(b.saved_at.items()):
        job.resume_saved(vm, b.node, t)
    for cp in b.checkpoints.values():
        job.discard_checkpoint(cp)
    if b.lock_held:
        job.release_vss(b.node, b.lock)
    if b.snap is not None:
        if node_dead and b.leak_on_failover:
            cm.trace("snapshot_leaked", csv=b.snap.csv, snapshot=b.snap.sid, node=b.node)  # KB2878635
            job.held_snaps.pop(b.snap.sid, None)  # leaked by the crash, not held by the job any more
        else:
            dispose_unless_held(job, b.node, [b.snap], b.surfaced)
    if b.pin is not None:
        b.vol.release(b.pin)
        if node_dead and not job.cfg.clear_stale_redirect:
            # the dead backup leaves the CSV marked "backup in progress" [MS]
            stale = b.vol.hold("backup_in_progress", b.node)
            job.track(release_after(job, b.vol, stale, job.env.now + job.cfg.stale_backup_hold_s))


def dispose_unless_held(job: BackupJob, node: str, snaps: list[StorageSnapshot], surfaced: bool = True) -> None:
    """A group is done with its snapshots: they are deleted, except those the policy holds (deleted
    when it releases them, backup/policy.py Commands)."""
    rest = park_held(job, node, snaps, surfaced)
    if rest:
        job.track(job.dispose(node, rest, surfaced=surfaced))


def release_after(job: BackupJob, vol: Any, hold: Any, at_s: float) -> Proc:
    if at_s > job.env.now:
        yield job.env.timeout(at_s - job.env.now)
    vol.release(hold)


# ---- the pipeline ----------------------------------------------------------------------------------
def run_batch(job: BackupJob, phases: tuple[Phase, ...], node: str, csv: str, vms: list[str],
              set_slots: simpy.Resource | None = None) -> Proc:
    """One group's phases; with `set_slots` (the policy's `sets_in_flight`) it waits for one first
    and keeps it to the group's end."""
    slot = None
    if set_slots is not None:
        slot = set_slots.request()
        yield slot
    for vm in vms:
        job.begin(vm)
    b = Batch(job, node, csv, vms, list(vms), job.cm.csvs[csv])
    try:
        for phase in phases:
            if b.stopped or (not b.live and not phase.always):
                break
            yield from phase.run(job, b)
    finally:
        clean_up(job, b)
        if slot is not None:
            set_slots.release(slot)  # type: ignore[union-attr]


def run_pipeline(job: BackupJob, phases: tuple[Phase, ...]) -> Proc:
    """Each node's VMs in the policy's order and groups (backup/policy.py; built in: by CSV,
    `vms_per_snapshot` at a time), `groups_per_node` groups at a time per node (built in:
    ceil(concurrent_vms_per_node / vms_per_snapshot)); a retried VM goes back to its host's queue as
    a group of its own."""
    job.retry_hook = start_pipeline(job, phases, job.online_vms())
    yield job.done


def start_pipeline(job: BackupJob, phases: tuple[Phase, ...], vms: list[str]) -> Callable[[str], None]:
    """Start the pipeline's node workers on `vms`; returns how a VM is retried (run_pipeline; a
    mixed-version cluster runs it on the VMs of the per-VM path only, backup/mixed.py)."""
    env, cm, pol, view = job.env, job.cm, job.policy, job.view
    queues = {n: simpy.Store(env) for n in cm.nodes}
    per_node: dict[str, list[str]] = {n: [] for n in cm.nodes}
    for vm in check_order(pol, vms, pol.order(view, list(vms))):
        per_node[cm.host_of(vm)].append(vm)
    for node in cm.nodes:
        groups = check_groups(pol, "snapshot_groups", per_node[node],
                              pol.snapshot_groups(view, node, list(per_node[node])), view.csv_of, one_csv=True)
        for group in groups:
            queues[node].put((view.csv_of(group[0]), group))
    limit = pol.sets_in_flight(view)
    set_slots = simpy.Resource(env, capacity=int(limit)) if limit is not None else None
    for node in cm.nodes:
        for _ in range(max(1, int(pol.groups_per_node(view, node)))):
            job.spawn(_worker(job, phases, node, queues[node], set_slots))

    def retry(vm: str) -> None:
        queues[cm.host_of(vm)].put((job.records[vm].spec.csv, [vm]))

    return retry


def _worker(job: BackupJob, phases: tuple[Phase, ...], node: str, queue: simpy.Store,
            set_slots: simpy.Resource | None) -> Proc:
    cm = job.cm
    while True:
        csv, vms = yield queue.get()
        yield from paced(job, node, vms)  # the policy's pacing (none built in)
        # VMs that moved (migration, failover) or whose node is gone go to their host's queue
        gone = [vm for vm in vms if cm.host_of(vm) != node or not job.settled(vm)]
        for vm in gone:
            job.track(job.requeue_when_hosted(vm))
        vms = [vm for vm in vms if vm not in gone]
        if vms:
            yield job.track(run_batch(job, phases, node, csv, vms, set_slots))
