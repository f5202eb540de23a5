"""ws2016: checkpoints for the whole set, then one storage snapshot set, then an RCT copy.

1. Through the management API (WMI) the backup app makes every VM of the set ready: a
   production checkpoint per VM (guest VSS in Windows, file-system freeze in Linux); if that is
   not possible, a standard checkpoint when allowed (crash-consistent), else the VM fails [MS].
   Per node at most `concurrent_vms_per_node` checkpoints are made at once [P].
2. Only when the whole set is ready, one hardware snapshot set covers every LUN involved (at
   most `max_luns_per_set` LUNs per set, else several sets) [seeds, MS]: the set pays the writers'
   base enumeration once (RCT-based backup no longer involves the Hyper-V writer for each VM's
   configuration, KB4014317 [MS]), the array commits it as one
   consistency-group snapshot and its LUNs are surfaced on the set node once. The set node
   coordinates with each CSV owner; each CSV is redirected only for the metadata operation.
3. Each checkpoint becomes a reference point and its AVHDX is merged; VMs run on AVHDX from
   their checkpoint until that merge (`avhdx_vm_s`) [seeds]. The copy reads only what RCT says
   changed since the previous reference point (full on the first backup; no RCT for .vhd disks
   or configuration version 5.0) [seeds].
VMs that fail are retried together in a later round after `retry_wait_s`.
"""

from __future__ import annotations

from collections.abc import Callable

import simpy

from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.ledger import Proc, StepFailed
from cluster_sim.backup.policy import check_groups, check_order, paced, park_held
from cluster_sim.cluster.storage import Checkpoint, StorageSnapshot


def body(job: BackupJob) -> Proc:
    job.retry_hook = start(job, job.online_vms())
    yield job.done


def start(job: BackupJob, vms: list[str]) -> Callable[[str], None]:
    """Start the first round on `vms`; returns how a VM is retried (a mixed-version cluster runs
    this on the VMs of the ws2016 path only, backup/mixed.py)."""
    pool: list[str] = []

    def retry(vm: str) -> None:
        if not pool:
            job.track(_start_round_after_instant(job, pool))
        pool.append(vm)

    job.track(run_round(job, vms))
    return retry


def _start_round_after_instant(job: BackupJob, pool: list[str]) -> Proc:
    yield job.env.timeout(0)  # gather every retry due at this instant into one round
    vms = sorted(pool)
    pool.clear()
    yield job.track(run_round(job, vms))


def run_round(job: BackupJob, vms: list[str]) -> Proc:
    env, cm = job.env, job.cm
    waiting = [vm for vm in vms if not job.settled(vm)]
    for vm in waiting:  # host died or VM moving: they join a later round once settled
        job.track(job.requeue_when_hosted(vm))
    vms = [vm for vm in vms if vm not in waiting]
    if not vms:
        return
    pol, view = job.policy, job.view  # backup/policy.py: order, checkpoints per node, sets, set node
    vms = check_order(pol, vms, pol.order(view, list(vms)))
    slots = {n: simpy.Resource(env, capacity=max(1, int(pol.checkpoints_per_node(view, n)))) for n in cm.nodes}
    checkpoints: dict[str, Checkpoint] = {}
    kinds: dict[str, str] = {}

    # ---- 1. checkpoints for the whole set ----
    def make_checkpoint(vm: str) -> Proc:
        node = cm.host_of(vm)
        rec = job.records[vm]
        job.begin(vm)
        with slots[node].request() as req:
            yield req
            job.trace("vm_prepare", vm=vm, node=node)
            job.critical.add(vm)
            kind = "standard"
            spec = rec.spec
            wants_production = rec.plan.mode == "app" or (spec.guest_os == "linux" and spec.integration_services)
            if wants_production:
                try:
                    yield from job.guest_freeze(vm, node, app=(rec.plan.mode == "app"))
                    kind = "production"
                except StepFailed as exc:
                    if exc.reason == "node_failed" or not job.cfg.allow_standard_checkpoint_fallback:
                        raise
            with job.span("checkpoint", vm, node):
                yield env.timeout(job.cfg.checkpoint_create_s)
            if kind == "production":
                job.thaw(vm, node)
            job.ensure_host(vm, node)
            checkpoints[vm] = job.create_checkpoint(vm, kind)
            job.cap.checkpoint(vm, env.now, flushed=(kind == "production"))
            kinds[vm] = kind
            job.critical.discard(vm)  # the checkpoint is durable on the CSV: the VM may move

    procs = {vm: job.attempt(make_checkpoint(vm)) for vm in vms}
    for vm, p in procs.items():
        failed = yield p
        if failed is not None:
            job.fail(vm, failed.reason)
    ready = [vm for vm in vms if vm in checkpoints]
    if not ready:
        return

    # ---- 2. snapshot sets over the LUNs involved (built in: one, 64 LUNs per set at most) ----
    sets = check_groups(pol, "snapshot_sets", ready, pol.snapshot_sets(view, list(ready)), view.csv_of,
                        one_csv=False)
    limit = pol.sets_in_flight(view)
    if limit is not None and job.set_slots is None:
        job.set_slots = simpy.Resource(env, capacity=int(limit))
    copies = []
    for members in sets:
        chunk = sorted({view.csv_of(vm) for vm in members})
        node = pol.set_node(view, chunk)
        yield from paced(job, node, members)  # the policy's pacing (none built in)
        slot = None
        if job.set_slots is not None:
            slot = job.set_slots.request()
            yield slot
        snaps = yield from _take_set(job, node, chunk, members, checkpoints)
        if snaps is None:
            if slot is not None:
                job.set_slots.release(slot)  # type: ignore[union-attr]
            continue
        # ---- 3. reference points, merges and RCT copies ----
        procs3 = [job.spawn(_after_snapshot(job, vm, snaps[job.records[vm].spec.csv], checkpoints.pop(vm), kinds[vm]))
                  for vm in members]
        copies.append(job.track(_release_when_done(job, node, procs3, list(snaps.values()), slot)))
    if copies:
        yield simpy.AllOf(env, copies)


def _take_set(job: BackupJob, node: str, luns: list[str], members: list[str], checkpoints: dict[str, Checkpoint]) -> Proc:
    env, cm = job.env, job.cm
    try:
        lock = yield from job.acquire_vss(node)
    except StepFailed as exc:
        _fail_members(job, members, checkpoints, exc.reason)
        return None
    try:
        try:
            yield from job.writer_enumeration(node, per_vm=False)
        except StepFailed as exc:
            _fail_members(job, members, checkpoints, exc.reason)
            return None
        if job.cfg.csv_owner_coordination_s and any(cm.csvs[lun].coordinator != node for lun in luns):
            yield env.timeout(job.cfg.csv_owner_coordination_s)
        holds = [(cm.csvs[lun], cm.csvs[lun].hold("metadata", node)) for lun in luns]
        t_meta = env.now
        failed: StepFailed | None = None
        try:
            res = yield from job.snapshot_set(node, luns, tuple(members), job.new_set_id())
        except StepFailed as exc:
            failed = exc
        rest = t_meta + job.cfg.csv_metadata_redirect_s - env.now
        if rest > 0:
            yield env.timeout(rest)
        for vol, h in holds:
            vol.release(h)
        if failed is not None:
            _fail_members(job, members, checkpoints, failed.reason)
            return None
        if res.over_hold_limit:
            job.track(job.dispose(node, list(res.snaps.values()), surfaced=False))
            _fail_members(job, members, checkpoints, "vss_hold_writes_timeout")
            return None
        for vm in members:
            job.records[vm].snapshot_id = res.snaps[job.records[vm].spec.csv].sid
        try:
            yield from job.surface(node, list(res.snaps.values()))
        except StepFailed as exc:  # the set node lost its storage fabric
            job.track(job.dispose(node, list(res.snaps.values()), surfaced=False))
            _fail_members(job, members, checkpoints, exc.reason)
            return None
        return res.snaps
    finally:
        job.release_vss(node, lock)


def _fail_members(job: BackupJob, members: list[str], checkpoints: dict[str, Checkpoint], reason: str) -> None:
    for vm in members:
        cp = checkpoints.pop(vm, None)
        if cp is not None:
            job.discard_checkpoint(cp)
        job.fail(vm, reason)


def _after_snapshot(job: BackupJob, vm: str, snap: StorageSnapshot, cp: Checkpoint, kind: str) -> Proc:
    node = job.cm.host_of(vm)
    merge = job.spawn(job.merge(vm, cp))
    try:
        yield from job.copy_in_slot(vm, node, snap)
    except StepFailed as exc:
        yield merge
        job.fail(vm, exc.reason)
        return
    yield merge
    rec = job.records[vm]
    if kind == "production" and rec.plan.mode == "app":
        job.finalize(vm, "app_consistent", "")
    elif kind == "standard":
        job.finalize(vm, "crash_consistent", "standard_checkpoint_fallback")
    else:  # a production checkpoint of a guest without VSS: file systems frozen (Linux)
        job.finalize(vm, "crash_consistent", rec.plan.reason)


def _release_when_done(job: BackupJob, node: str, procs: list, snaps: list[StorageSnapshot],  # type: ignore[type-arg]
                       slot: simpy.Event | None = None) -> Proc:
    if procs:
        yield simpy.AllOf(job.env, procs)
    if slot is not None:
        job.set_slots.release(slot)  # type: ignore[union-attr]
    rest = park_held(job, node, snaps, True)  # those the policy holds wait for it (backup/policy.py)
    if rest:
        yield from job.dispose(node, rest)
