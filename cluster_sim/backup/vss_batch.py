"""The per-VM (or per-batch) VSS pipeline shared by ws2008r2, ws2012 and ws2012r2.

Each node works through its own VMs, grouped by CSV into batches of `vms_per_snapshot` (one
shadow-copy set, one storage snapshot per batch). Per batch:

  [ws2008r2: pin the CSV] -> VSS lock (one set creation per node) -> writer enumeration on
  every node (KB4014317) -> prepare each VM (guest VSS freeze | save state | [ws2012r2] AVHDX
  checkpoint) -> [coordinate with the CSV owner] -> host snapshot set, one commit at the array
  ([ws2012+] CSV redirected for the metadata operation) -> thaw / resume -> surface the snapshot
  LUN on this host -> auto-recovery ([ws2008r2/ws2012] host mounts | [ws2012r2] SCSI hot-add
  fix-up in the guest) -> release the VSS lock -> copy each VM (copy slots) -> [ws2012r2] merge
  its AVHDX -> remove the snapshot LUN from the host and delete it on the array (and the CSV pin).

The generation modules differ only in the `Flavor` flags they pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import simpy

from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.ledger import Proc, StepFailed
from cluster_sim.cluster.storage import Checkpoint, StorageSnapshot


@dataclass(frozen=True)
class Flavor:
    pins_csv: bool  # ws2008r2: CSV in redirected access, pinned to the backup node, until the VM is copied
    metadata_redirect: bool  # ws2012+: CSV redirected only while the snapshot is created
    detects_hold_overrun: bool  # False on ws2008r2: an overrun is not detected and the capture is torn
    host_mounts: bool  # auto-recovery by mounting every VHD on the host
    scsi_fixup: bool  # ws2012r2: AutoRecovery.vhdx hot-added over SCSI, fixed up in the guest
    checkpoints: bool  # ws2012r2: guest snapshot creates an AVHDX checkpoint
    coordinate_owner: bool  # snapshot node coordinates with the CSV owner [seeds]
    leaks_snapshot_on_failover: bool = False  # ws2012: KB2878635, a failover during a CSV snapshot leaks it


def batches_for(job: BackupJob, node: str, vms: list[str]) -> list[tuple[str, list[str]]]:
    """Group a node's VMs by CSV, then chunk into batches of `vms_per_snapshot`."""
    k = job.cfg.vms_per_snapshot
    by_csv: dict[str, list[str]] = {}
    for vm in vms:
        by_csv.setdefault(job.records[vm].spec.csv, []).append(vm)
    out = []
    for csv in sorted(by_csv):
        names = by_csv[csv]
        out += [(csv, names[i : i + k]) for i in range(0, len(names), k)]
    return out


def run_pipeline(job: BackupJob, flavor: Flavor) -> Proc:
    env = job.env
    queues = {n: simpy.Store(env) for n in job.cm.nodes}
    per_node: dict[str, list[str]] = {n: [] for n in job.cm.nodes}
    for vm in job.online_vms():
        per_node[job.cm.host_of(vm)].append(vm)
    # interleave nodes' batches so that the array sees requests from every node early
    for node in job.cm.nodes:
        for batch in batches_for(job, node, per_node[node]):
            queues[node].put(batch)
    workers = max(1, math.ceil(job.cfg.concurrent_vms_per_node / job.cfg.vms_per_snapshot))
    for node in job.cm.nodes:
        for _ in range(workers):
            job.spawn(_worker(job, flavor, node, queues[node]))

    def retry(vm: str) -> None:
        node = job.cm.host_of(vm)
        queues[node].put((job.records[vm].spec.csv, [vm]))

    job.retry_hook = retry
    yield job.done


def _worker(job: BackupJob, flavor: Flavor, node: str, queue: simpy.Store) -> Proc:
    cm = job.cm
    while True:
        csv, vms = yield queue.get()
        # VMs that moved (migration, failover) or whose node is gone go to their host's queue
        gone = [vm for vm in vms if cm.host_of(vm) != node or not job.settled(vm)]
        for vm in gone:
            job.track(job.requeue_when_hosted(vm))
        vms = [vm for vm in vms if vm not in gone]
        if vms:
            yield job.track(process_batch(job, flavor, node, csv, vms))


def process_batch(job: BackupJob, flavor: Flavor, node: str, csv: str, vms: list[str]) -> Proc:
    env, cm = job.env, job.cm
    for vm in vms:
        job.begin(vm)
    live = list(vms)

    def drop(vm: str, reason: str) -> None:
        if vm in live:
            live.remove(vm)
            job.fail(vm, reason)

    vol = cm.csvs[csv]
    pin = None
    if flavor.pins_csv:
        if not cm.has_fabric(node):  # a node without its storage fabric cannot own the CSV
            for vm in list(live):
                drop(vm, "storage_path_lost")
            return
        # ws2008r2: the CSV moves to the backup node and goes into redirected access first;
        # the shadow-copy set is started once the node owns it
        pin = yield vol.pin(node)
    try:
        lock = yield from job.acquire_vss(node)
    except StepFailed as exc:
        if pin is not None:
            vol.release(pin)
        for vm in list(live):
            drop(vm, exc.reason)
        return
    lock_held = True
    snap: StorageSnapshot | None = None
    surfaced = False
    checkpoints: dict[str, Checkpoint] = {}
    saved_at: dict[str, float] = {}
    frozen: list[str] = []
    job.critical.update(vms)  # guest freeze through auto-recovery: migrations wait [V]
    try:
        try:
            yield from job.writer_enumeration(node)
        except StepFailed as exc:
            for vm in list(live):
                drop(vm, exc.reason)
            return
        t_freeze = env.now

        # ---- prepare every VM of the batch in parallel ----
        def prepare(vm: str) -> Proc:
            job.trace("vm_prepare", vm=vm, node=node)
            if flavor.scsi_fixup and job.server is not None and vm in job.server.autorecovery_leftover:
                raise StepFailed("autorecovery_avhdx_leftover", vm)  # 0x800423FB [MS]
            mode = job.records[vm].plan.mode
            if mode == "saved_state":
                yield from job.save_state(vm, node)
                saved_at[vm] = env.now - job.cfg.saved_state_downtime_s / 2
                return
            spec = job.records[vm].spec
            if mode == "app" or spec.guest_os == "linux" and spec.integration_services:
                yield from job.guest_freeze(vm, node, app=(mode == "app"))
                frozen.append(vm)
            if flavor.checkpoints:
                yield env.timeout(job.cfg.checkpoint_create_s)
                checkpoints[vm] = job.create_checkpoint(vm, "backup")
                job.cap.checkpoint(vm, env.now, flushed=vm in frozen)

        procs = {vm: job.attempt(prepare(vm)) for vm in vms}
        for vm, p in procs.items():
            failed = yield p
            if failed is not None:
                drop(vm, failed.reason)
        if not live:
            return
        if flavor.coordinate_owner and vol.coordinator != node:
            yield env.timeout(job.cfg.csv_owner_coordination_s)
        meta = vol.hold("metadata", node) if flavor.metadata_redirect else None
        t_meta = env.now
        if not flavor.detects_hold_overrun:
            for vm in live:  # what the disk held when the commit began (an overrun tears from here)
                job.cap.set_started(vm, env.now)
        try:
            res = yield from job.snapshot_set(node, [csv], tuple(live), job.new_set_id(),
                                              leak_on_failover=flavor.leaks_snapshot_on_failover)
        except StepFailed as exc:
            for vm in list(live):
                drop(vm, exc.reason)
            return
        finally:
            if meta is not None:
                job.track(_release_after(job, vol, meta, t_meta + job.cfg.csv_metadata_redirect_s))
        snap = res.snaps[csv]
        for vm in live:
            job.records[vm].snapshot_id = snap.sid
            if not flavor.checkpoints:
                job.cap.host_snapshot(vm, env.now, job.cfg.auto_recovery,
                                      torn_overrun=res.over_hold_limit and not flavor.detects_hold_overrun)
        # Hyper-V writer: freeze to thaw at most writer_freeze_limit_s [MS]
        if env.now - t_freeze > job.cfg.writer_freeze_limit_s:
            for vm in [v for v in live if job.records[v].plan.mode == "app"]:
                drop(vm, "vss_writer_timeout")
        if res.over_hold_limit:
            if flavor.detects_hold_overrun:
                for vm in list(live):
                    drop(vm, "vss_hold_writes_timeout")
            else:
                for vm in live:
                    if job.records[vm].plan.mode != "saved_state":  # a saved VM writes nothing
                        job.records[vm].torn = True  # not detected: claimed consistent, silently torn [MS]
        for vm in frozen:
            job.thaw(vm, node)
        frozen.clear()
        resumes = [job.spawn(job.resume_state(vm, node, saved_at.pop(vm))) for vm in list(saved_at)]
        if resumes:
            yield simpy.AllOf(env, resumes)
        if not live:
            return
        surfaced = True
        try:
            yield from job.surface(node, [snap])
        except StepFailed as exc:
            for vm in list(live):
                drop(vm, exc.reason)
            return
        for vm in list(live):
            try:
                job.ensure_host(vm, node)
            except StepFailed as exc:
                drop(vm, exc.reason)
        if not live:
            return

        # ---- auto-recovery ----
        app_vms = [vm for vm in live if job.records[vm].plan.mode == "app"]
        if flavor.host_mounts and app_vms and job.cfg.auto_recovery:
            failed = yield from job.host_auto_recovery(node, app_vms)
            for vm, reason in failed.items():
                drop(vm, reason)
            if not live:
                return
        if flavor.scsi_fixup and app_vms:
            fix = {vm: job.attempt(job.scsi_fixup(vm, node)) for vm in app_vms}
            for vm, p in fix.items():
                failed = yield p
                if failed is not None:
                    drop(vm, failed.reason)
        job.release_vss(node, lock)
        lock_held = False
        job.critical.difference_update(vms)  # the storage snapshot exists: the VMs may move

        # ---- copy (and merge) each VM ----
        copies = [job.spawn(_copy_one(job, node, vm, snap, checkpoints.pop(vm, None))) for vm in list(live)]
        if copies:
            yield simpy.AllOf(env, copies)
    finally:
        job.critical.difference_update(vms)
        if job.dead:  # a dead job leaves what it holds (BackupJob.kill says what becomes of it)
            frozen, saved_at, checkpoints, lock_held, snap, pin = [], {}, {}, False, None, None
        node_dead = not cm.is_alive(node)
        for vm in frozen:
            job.thaw(vm, node)
        for vm, t in list(saved_at.items()):
            job.resume_saved(vm, node, t)
        for cp in checkpoints.values():
            job.discard_checkpoint(cp)
        if lock_held:
            job.release_vss(node, lock)
        if snap is not None:
            if node_dead and flavor.leaks_snapshot_on_failover:
                cm.trace("snapshot_leaked", csv=snap.csv, snapshot=snap.sid, node=node)  # KB2878635
                job.held_snaps.pop(snap.sid, None)  # leaked by the crash, not held by the job any more
            else:
                job.track(job.dispose(node, [snap], surfaced=surfaced))
        if pin is not None:
            vol.release(pin)
            if node_dead and not job.cfg.clear_stale_redirect:
                # the dead backup leaves the CSV marked "backup in progress" [MS]
                stale = vol.hold("backup_in_progress", node)
                job.track(_release_after(job, vol, stale, env.now + job.cfg.stale_backup_hold_s))


def _release_after(job: BackupJob, vol, hold, at_s: float) -> Proc:  # type: ignore[no-untyped-def]
    if at_s > job.env.now:
        yield job.env.timeout(at_s - job.env.now)
    vol.release(hold)


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
    outcome = {"app": "app_consistent", "crash": "crash_consistent", "saved_state": "saved_state"}[rec.plan.mode]
    job.finalize(vm, outcome, rec.plan.reason)
