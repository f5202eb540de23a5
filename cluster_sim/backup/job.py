"""The backup job orchestrator and the steps every generation is built from.

A job backs up every VM of the fleet once (plus retries). Each VM ends with exactly one
outcome and a reason; a VM whose attempt fails is retried after `retry_wait_s`, up to
`retries` times (only failed VMs are retried [V]). Generations differ in the order and kind
of steps (see ws2008r2.py .. ws2016.py); the steps themselves live here.

Every process of a job is started through `spawn` (or `track`, `attempt`), so that the job can die
with the backup application (`backup_server_crash`, `kill`): its processes stop where they are, and
what it held is released only where the cluster or the guests do it themselves; the rest is left
behind and recorded in the cluster's fault ledger (README "Fault events").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import simpy

from cluster_sim.backup.capture import Captures
from cluster_sim.backup.eligibility import Plan, plan
from cluster_sim.cluster.model import ClusterModel
from cluster_sim.cluster.storage import Checkpoint, SnapshotFailure, StorageSnapshot
from cluster_sim.cluster.topology import ARRAY_READ, ARRAY_WRITE, BACKUP_TARGET, cluster_nic, fabric
from cluster_sim.cluster.writes import changed_mib
from cluster_sim.scenario import Backup

if TYPE_CHECKING:
    from cluster_sim.backup.context import BackupContext
from cluster_sim.scenario.placement import VmSpec

Proc = Generator[simpy.Event, Any, Any]

# Failures a retry can cure; the rest are properties of the VM and fail at once.
# A leftover AutoRecovery.avhdx (from a backup that died during the ws2012r2 fix-up) makes every
# later backup of the VM fail with 0x800423FB until someone removes it [MS].
PERMANENT = {"event_10103_no_scsi", "production_checkpoint_failed", "autorecovery_avhdx_leftover"}
KILLED = "backup_server_crash"  # the cause of the interrupt that ends a dead job's processes
SERVER_CRASHED = "backup_server_crashed"  # the reason of a VM whose job died without a restart

# Injected snapshot faults -> the reason a VM reports [MS]
FAULT_REASONS = {
    "provider_veto": "provider_veto",  # VSS_E_PROVIDER_VETO 0x80042306
    "out_of_space": "out_of_space",  # VSS_E_INSUFFICIENT_STORAGE 0x8004231F
    "timeout": "provider_timeout",  # VSS_E_HOLD_WRITES_TIMEOUT-like provider stall 0x80042314
}


class StepFailed(Exception):
    # SimPy re-creates a failed process's exception as type(e)(*e.args): keep args = (reason, detail)
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.reason + (f": {self.detail}" if self.detail else "")


@dataclass
class VmRecord:
    spec: VmSpec
    plan: Plan
    outcome: str | None = None
    reason: str = ""
    start_s: float | None = None
    end_s: float | None = None
    attempts: int = 0
    bytes_copied_mib: float = 0.0
    downtime_s: float = 0.0
    snapshot_id: str = ""
    torn: bool = False
    migrated_during_backup: bool = False
    incarnation: int = 0  # of the host when this attempt began (a restarted host is another)
    double_outcomes: int = 0
    verified: str = ""  # the restore verifier's verdict
    copy: str = ""  # what the last copy read: full | incremental | incremental_regions
    copy_reason: str = ""  # why a copy in an incremental job was not a plain incremental
    history: list[str] = field(default_factory=list)
    attempt_base: int = 0  # attempts before the job was restarted (its retries start again)


@dataclass
class SetResult:
    snaps: dict[str, StorageSnapshot]
    hold_s: float
    over_hold_limit: bool


class BackupJob:
    def __init__(self, cm: ClusterModel, generation: str, cfg: Backup, mode: str | None = None,
                 start_s: float | None = None, index: int = 0, *, ctx: BackupContext):
        self.cm = cm
        self.ctx = ctx  # what the generation's jobs share (backup/context.py)
        self.server = self.ctx.server  # backup/server.py BackupServer: the application running the job
        self.tracker = self.ctx.tracker
        self.mode = mode or cfg.mode
        self.start_at = cfg.start_s if start_s is None else start_s
        self.index = index
        self.env = cm.env
        self.trace = cm.trace
        self.gen = generation
        self.cfg = cfg
        self.records = {
            v.name: VmRecord(v, plan(v, generation, cfg.allow_standard_checkpoint_fallback)) for v in cm.vms
        }
        self.vss_lock = {n: simpy.Resource(self.env, capacity=1) for n in cm.nodes}
        self.copy_slots = {n: simpy.Resource(self.env, capacity=cfg.concurrent_vms_per_node) for n in cm.nodes}
        self.remaining = len(self.records)
        self.done = self.env.event()  # every VM has its outcome (the backup window ends)
        self.quiesced = self.env.event()  # ... and every release and clean-up has run
        self.active = 0
        self.started_s: float | None = None
        self.ended_s: float | None = None
        # counters reported in summary.json
        self.host_mounts = 0
        self.scsi_hot_adds = 0
        self.snapshot_sets = 0
        self.sw_snapshots = 0
        self.hold_overruns = 0  # sets whose writes were held past hold_writes_limit_s
        self.enumeration_s = 0.0  # writer enumeration (KB4014317), summed over sets
        self.surfacing_s = 0.0  # snapshot LUNs surfaced on the requesting hosts, summed over sets
        self.lun_snapshots_in_sets = 0  # hardware LUN snapshots that sets of this job committed
        self.vms_in_sets = 0  # VM captures those sets served (effective VMs per snapshot)
        self.surfaced: dict[str, int] = {}  # snapshot LUNs surfaced on each host now
        self.avhdx_vm_s = 0.0
        self._set_seq = 0
        self.retry_hook: Callable[[str], None] | None = None  # generation's way to re-run a VM
        self.mounted: dict[str, int] = {}  # VHDs mounted per host by this job's auto-recovery
        self.critical: set[str] = set()  # VMs between guest freeze and the end of auto-recovery
        self.aborted: set[str] = set()  # attempts aborted by a migration (policy abort_backup)
        self.orphans: dict[str, list[Checkpoint]] = {}  # AVHDX left unmerged by a crash
        self.running = False
        # the job's processes (spawn), flows, and what it holds now: what a crash of the backup
        # application leaves behind (kill)
        self.dead = False
        self._procs: dict[int, simpy.Process] = {}
        self._pseq = 0
        self._flows: set[Any] = set()
        self.held_snaps: dict[str, StorageSnapshot] = {}  # committed, their deletion not yet asked
        self.deleting: dict[str, StorageSnapshot] = {}  # deletion asked at the array
        self.held_cps: dict[str, Checkpoint] = {}  # created by this job, not yet merged
        self.mounted_vms: dict[tuple[str, str], int] = {}  # (node, vm) -> VHDs mounted by auto-recovery
        self.hot_added_vms: dict[str, str] = {}  # vm -> node: AutoRecovery disk hot-added now
        self.frozen_vms: dict[str, str] = {}  # vm -> node: guest frozen for VSS now
        self.saved_vms: dict[str, tuple[str, float]] = {}  # vm -> (node, saved at): in saved state now
        # signals of the cluster this job hears (disconnected by close(); the restart one once no
        # checkpoint a crash left behind waits for its VM to boot)
        self._disconnect = [cm.on_migration_requested.connect(self.gate), cm.on_vm_migrated.connect(self._moved)]
        self._disconnect_restart = cm.on_vm_restarted.connect(self._restarted)
        self.closed = False
        self.cap = Captures(self)

    # -- outcomes ----------------------------------------------------------------------------------
    def finalize(self, vm: str, outcome: str, reason: str = "") -> None:
        rec = self.records[vm]
        if rec.outcome is not None:
            rec.double_outcomes += 1  # the auditor reports this
            return
        rec.outcome = outcome
        rec.reason = reason
        rec.end_s = self.env.now
        if outcome != "failed":
            self.cap.succeeded(vm)
        self.trace("vm_outcome", vm=vm, outcome=outcome, reason=reason, attempts=rec.attempts)
        self.remaining -= 1
        if self.remaining == 0 and not self.done.triggered:
            self.ended_s = self.env.now
            self.running = False
            self.cm.io.set_phase("after")
            self.trace("job_end", generation=self.gen)
            self.done.succeed()
        self._check_quiet()

    def attempt(self, gen: Proc) -> simpy.Process:
        """Run a step in parallel; its value is None, or the StepFailed it ended with. (A SimPy
        process that fails before anyone waits on it would stop the whole simulation.)"""

        def guarded() -> Proc:
            try:
                yield from gen
            except StepFailed as exc:
                return exc
            return None

        return self.spawn(guarded())

    def spawn(self, gen: Proc) -> simpy.Event:
        """Start a process of this job. If the job dies (`kill`) it ends where it is; a dead job
        starts nothing (the event returned has already succeeded)."""
        if self.dead:
            gen.close()
            ev = self.env.event()
            ev.succeed(None)
            return ev
        key = self._pseq
        self._pseq += 1

        def guarded() -> Proc:
            try:
                if self.dead:  # started after the job died (kill does not interrupt a process not yet started)
                    gen.close()
                    return None
                return (yield from gen)
            except simpy.Interrupt as irq:
                if irq.cause != KILLED:
                    raise
                return None
            finally:
                self._procs.pop(key, None)

        proc = self.env.process(guarded())
        self._procs[key] = proc
        return proc

    # -- work tracking: the run ends when outcomes are in and no job process is still running --
    def track(self, gen: Proc) -> simpy.Event:
        self.active += 1
        proc = self.spawn(gen)
        proc.callbacks.append(self._untrack)
        return proc

    def _untrack(self, _ev: simpy.Event) -> None:
        self.active -= 1
        self._check_quiet()

    def _check_quiet(self) -> None:
        if self.remaining == 0 and self.active == 0 and not self.quiesced.triggered:
            self.quiesced.succeed()

    def begin(self, vm: str) -> None:
        rec = self.records[vm]
        rec.attempts += 1
        rec.incarnation = self.cm.incarnation_of(self.cm.host_of(vm))
        self.cap.begin(vm)
        if rec.start_s is None:
            rec.start_s = self.env.now
        self.trace("vm_attempt", vm=vm, attempt=rec.attempts, node=self.cm.host_of(vm))

    # -- migration policy and moves --------------------------------------------------------------
    def gate(self, vm: str) -> str:
        """Asked by a live migration: may this VM move now?"""
        if not self.running or vm not in self.critical:
            return "ok"
        policy = self.cfg.migration_policy
        if policy == "block_and_retry":
            return "refuse"
        if policy == "abort_backup":
            self.aborted.add(vm)
            self.trace("backup_aborted_by_migration", vm=vm)
            return "abort"
        return "ok"

    def _moved(self, vm: str, src: str, dst: str) -> None:
        if self.running:
            self.records[vm].migrated_during_backup = True

    def _restarted(self, vm: str) -> None:
        """A VM failed over and booted: Hyper-V merges what a crash left behind."""
        for cp in self.orphans.pop(vm, []):
            self.discard_checkpoint(cp)
        if self.closed and not self.orphans:
            self._disconnect_restart()

    def close(self) -> None:
        """The job is over (every VM has its outcome, every process has ended): it stops hearing
        migration requests and moves; it hears VM restarts until the checkpoints a host crash left
        behind are merged."""
        self.closed = True
        for disconnect in self._disconnect:
            disconnect()
        if not self.orphans:
            self._disconnect_restart()

    def fail(self, vm: str, reason: str) -> None:
        """This attempt failed: retry later if allowed, else the VM's outcome is `failed`."""
        rec = self.records[vm]
        self.critical.discard(vm)
        self.aborted.discard(vm)
        if rec.outcome is not None:
            return
        rec.history.append(reason)
        self.trace("vm_attempt_failed", vm=vm, reason=reason, attempt=rec.attempts)
        if reason not in PERMANENT and rec.attempts - rec.attempt_base <= self.cfg.retries:
            self.track(self._retry_later(vm))
        else:
            self.finalize(vm, "failed", reason)

    def _retry_later(self, vm: str) -> Proc:
        yield self.env.timeout(self.cfg.retry_wait_s)
        yield from self.wait_for_host(vm)
        if self.records[vm].plan.mode == "offline":
            self.track(self.offline_copy(vm))
        elif self.retry_hook is not None:
            self.retry_hook(vm)

    def settled(self, vm: str) -> bool:
        """The VM can be backed up where the cluster says it is: host alive and up, not moving."""
        return self.cm.is_settled(vm)

    def wait_for_host(self, vm: str) -> Proc:
        """Wait until the VM is settled on a live node (after a failover or a migration)."""
        step = self.cm.failure_detection_s
        while not self.settled(vm):
            yield self.env.timeout(step)

    def requeue_when_hosted(self, vm: str) -> Proc:
        """A VM whose queued work sat on a dead (or other) node: hand it to its host, no attempt lost."""
        yield from self.wait_for_host(vm)
        if self.records[vm].outcome is None and self.retry_hook is not None:
            self.retry_hook(vm)

    @property
    def retried_vms(self) -> int:
        return sum(1 for r in self.records.values() if r.attempts > 1)

    # -- the run -----------------------------------------------------------------------------------
    def run(self, body: Callable[[BackupJob], Proc]) -> Proc:
        yield self.env.timeout(max(0.0, self.start_at - self.env.now))
        if self.server is not None:
            self.server.job = self
            if self.server.down:  # the backup application is down: the job waits for it, or never runs
                if self.server.back is None:
                    self._never_ran()
                    return
                self.trace("job_waits_for_backup_server", job=self.index)
                yield self.server.back
        self.started_s = self.env.now
        self.running = True
        self.cm.io.set_phase("backup")
        self.trace("job_start", generation=self.gen, vms=len(self.records), mode=self.mode, job=self.index)
        for name in sorted(self.records):
            rec = self.records[name]
            if rec.plan.mode == "fail":
                self.begin(name)
                self.finalize(name, "failed", rec.plan.reason)
            elif rec.plan.mode == "offline":
                self.track(self.offline_copy(name))
        yield from body(self)

    # -- the backup application dies (backup_server_crash) ----------------------------------------
    def _never_ran(self) -> None:
        """The job was due while the backup application was down for good: every VM fails."""
        self.started_s = self.env.now
        self.trace("job_start", generation=self.gen, vms=len(self.records), mode=self.mode, job=self.index)
        for name in sorted(self.records):
            self.finalize(name, "failed", SERVER_CRASHED)

    def kill(self, restart: bool) -> None:
        """The backup application dies now. Its processes stop where they are and its copy and
        merge streams end. What it held is released only where the cluster or the guests do it by
        themselves; the rest is left behind and recorded in the fault ledger (README "Fault
        events"). Without a restart to come, every VM without an outcome fails now."""
        if self.dead:
            return
        self.dead = True
        self.running = False
        waiting = sorted(n for n, r in self.records.items() if r.outcome is None)
        self.trace("job_killed", job=self.index, vms_without_outcome=len(waiting), restart=restart)
        for key in sorted(self._procs):
            proc = self._procs[key]
            if proc.is_alive and not isinstance(proc.target, simpy.events.Initialize):
                proc.interrupt(KILLED)
        for flow in sorted(self._flows, key=lambda f: f.fid):
            self.cm.net.stop(flow)
        self._flows.clear()
        self._leave_behind()
        self.critical.clear()
        self.aborted.clear()
        if not restart:
            for name in waiting:
                self.finalize(name, "failed", SERVER_CRASHED)

    def _leave_behind(self) -> None:
        cm, cause = self.cm, KILLED
        # VSS aborts the dead requester's session: the guests thaw and the Hyper-V writer resumes the
        # VMs it saved [MS]
        for vm, node in sorted(self.frozen_vms.items()):
            self.vm_op(vm, node, "thaw")
        self.frozen_vms.clear()
        for vm, (node, t) in sorted(self.saved_vms.items()):
            self.resume_saved(vm, node, t)
        # non-persistent software shadow copies are deleted by VSS when their requester goes away
        # [MS]; hardware snapshots stay on the array (nobody asks for their deletion)
        for sid, snap in sorted(self.held_snaps.items()):
            if snap.released_s is not None:
                continue
            if snap.software:
                cm.array.release(snap)
            else:
                self.trace("snapshot_leaked", csv=snap.csv, snapshot=sid, node=snap.requester, why=cause)
                cm.leave_behind(cause, "snapshots", sid)
        self.held_snaps.clear()
        # deletions already asked of the array are completed by the array
        asked = [s for _sid, s in sorted(self.deleting.items()) if s.released_s is None]
        if asked:
            cm.cluster_work(cm.array.delete(asked))
        self.deleting.clear()
        # checkpoints the job made and had not merged stay (an orphan of a host crash is merged when
        # its VM boots, as before)
        orphans = {cp.cid for cps in self.orphans.values() for cp in cps}
        for cid, cp in sorted(self.held_cps.items()):
            if cp.merged_s is None and cid not in orphans:
                cm.leave_behind(cause, "checkpoints", cid)
        self.held_cps.clear()
        for (node, vm), n in sorted(self.mounted_vms.items()):
            cm.leave_behind(cause, "mounts", (node, vm), n)
        self.mounted_vms.clear()
        for vm, node in sorted(self.hot_added_vms.items()):
            cm.leave_behind(cause, "hot_adds", vm)
            if self.server is not None:
                self.server.autorecovery_leftover.add(vm)
            self.trace("autorecovery_disk_left", vm=vm, node=node)
        self.hot_added_vms.clear()
        # CSV holds: pins still waiting are withdrawn; a metadata redirection ends with its aborted
        # operation; a ws2008r2 pin turns into the "backup in progress" mark, cleared by the cluster
        # after stale_backup_hold_s [MS]; such marks the job was waiting to clear are cleared by the
        # cluster at their time
        for vol in cm.csvs:
            for ev in vol.pin_requests():
                vol.cancel_pin(ev)
        for hold in cm.csvs.leaked_holds():
            vol = cm.csvs[hold.csv]
            if hold.kind == "metadata":
                vol.release(hold)
            elif hold.kind == "backup_pin":
                vol.release(hold)
                stale = vol.hold("backup_in_progress", hold.node)
                cm.leave_behind(cause, "redirected_holds", stale.hid)
                cm.release_later(vol, stale, self.env.now + self.cfg.stale_backup_hold_s)
            elif hold.kind == "backup_in_progress" and not cm.releases_by_itself(hold.hid):
                cm.release_later(vol, hold, hold.taken_s + self.cfg.stale_backup_hold_s)

    def restart(self, body: Callable[[BackupJob], Proc]) -> None:
        """The backup application is back: the job starts again for the VMs without an outcome,
        each with a new attempt and its retries again."""
        if not self.dead:
            return
        self.dead = False
        self.running = True
        self.vss_lock = {n: simpy.Resource(self.env, capacity=1) for n in self.cm.nodes}
        self.copy_slots = {n: simpy.Resource(self.env, capacity=self.cfg.concurrent_vms_per_node)
                           for n in self.cm.nodes}
        self.surfaced = {}
        self.mounted = {}
        self.retry_hook = None
        left = sorted(n for n, r in self.records.items() if r.outcome is None)
        for name in left:
            self.records[name].attempt_base = self.records[name].attempts
        self.trace("job_restarted", job=self.index, vms=len(left))
        if self.cfg.clear_stale_redirect:  # the application clears the marks its dead self left
            for hold in self.cm.csvs.leaked_holds():
                if hold.kind == "backup_in_progress":
                    self.cm.csvs[hold.csv].release(hold)
        self.spawn(self._rerun(body, left))

    def _rerun(self, body: Callable[[BackupJob], Proc], left: list[str]) -> Proc:
        for name in left:
            if self.records[name].plan.mode == "offline":
                self.track(self.offline_copy(name))
        yield from body(self)

    def online_vms(self) -> list[str]:
        """The VMs backed up online that have no outcome yet (all of them, unless the job restarted)."""
        return sorted(n for n, r in self.records.items()
                      if r.plan.mode in ("app", "crash", "saved_state") and r.outcome is None)

    def new_set_id(self) -> str:
        self._set_seq += 1
        return f"set-{self._set_seq:05d}"

    # -- steps -------------------------------------------------------------------------------------
    def ensure_host(self, vm: str, node: str) -> None:
        """The cluster service's view decides whether a step on `node` can go on: the node
        must be up and still own the VM (a crash or a move fails the step)."""
        cm = self.cm
        if not cm.has_quorum(node):  # alive, but its side of a partition lost quorum
            raise StepFailed("quorum_lost", node)
        if not cm.is_alive(node) or not cm.is_up(node) or cm.incarnation_of(node) != self.records[vm].incarnation:
            raise StepFailed("node_failed", node)
        if vm in self.aborted:
            raise StepFailed("aborted_by_migration", node)
        if not cm.runs_on(vm, node) or cm.is_migrating(vm):
            raise StepFailed("vm_moved", node)

    def vm_op(self, vm: str, node: str, method: str, *args: Any) -> bool:
        """Send a node operation about a VM only if that node (the incarnation this attempt
        began on) still runs it; a host never hears of VMs it does not run."""
        if self.cm.runs_on(vm, node, self.records[vm].incarnation):
            self.cm.node_op(node, method, vm, *args)
            return True
        return False

    def acquire_vss(self, node: str) -> Proc:
        """One shadow-copy set creation at a time per machine [MS]; waiting longer than
        `snapshot_set_wait_limit_s` fails with VSS_E_SNAPSHOT_SET_IN_PROGRESS."""
        req = self.vss_lock[node].request()
        got = yield req | self.env.timeout(self.cfg.snapshot_set_wait_limit_s)
        if req not in got:
            req.cancel()
            raise StepFailed("snapshot_set_in_progress", node)
        return req

    def release_vss(self, node: str, req: simpy.events.Event) -> None:
        self.vss_lock[node].release(req)

    def guest_freeze(self, vm: str, node: str, app: bool) -> Proc:
        """Guest VSS freeze (Windows) or file-system freeze (Linux); returns the freeze time."""
        spec = self.records[vm].spec
        self.ensure_host(vm, node)
        self.vm_op(vm, node, "freeze")
        self.frozen_vms[vm] = node
        rng = self.ctx.streams.get("vm", vm, "guest_freeze")
        if spec.guest_os == "linux":
            d = float(self.cfg.linux_freeze_median_s * math.exp(self.cfg.guest_freeze_sigma * rng.standard_normal()))
            limit, code = self.cfg.linux_freeze_limit_s, "linux_freeze_timeout"
        else:
            d = float(self.cfg.guest_freeze_median_s * math.exp(self.cfg.guest_freeze_sigma * rng.standard_normal()))
            limit, code = self.cfg.writer_freeze_limit_s, "vss_writer_timeout"
        if d > limit:
            yield self.env.timeout(limit)
            self.ensure_host(vm, node)
            self.thaw(vm, node)
            raise StepFailed(code, f"guest took {d:.1f} s")
        yield self.env.timeout(d)
        self.ensure_host(vm, node)
        self.cap.freeze(vm, self.env.now, app)  # the guest flushed its cache: this is its capture point
        self.trace("guest_frozen", vm=vm, node=node, freeze_s=round(d, 6), app=app)
        return d

    def thaw(self, vm: str, node: str) -> None:
        self.frozen_vms.pop(vm, None)
        self.vm_op(vm, node, "thaw")

    def writer_enumeration(self, node: str, per_vm: bool = True) -> Proc:
        """KB4014317 [MS]: before a shadow-copy set, every node's Hyper-V writer enumerates the
        VMs it owns (running or not); each node's time grows with its VMs, their VHDs and their
        checkpoints, and the slowest node dominates. Past `writer_freeze_limit_s` the writer times
        out (VSS_E_WRITERERROR_TIMEOUT). ws2008r2/ws2012/ws2012r2 pay it per set. ws2016 takes one
        set, and its RCT-based backup no longer involves the Hyper-V writer for the VMs' data
        (`per_vm=False`): that set pays the base time only, whatever the number of VMs [MS]."""
        cfg, cm = self.cfg, self.cm
        if not per_vm:
            self.enumeration_s += cfg.writer_enumeration_base_s
            self.trace("writer_enumeration", node=node, s=round(cfg.writer_enumeration_base_s, 6))
            yield self.env.timeout(cfg.writer_enumeration_base_s)
            return
        inventory = cm.node_inventory()
        checkpoints = cm.checkpoints_by_node()
        t = 0.0
        for n in cm.nodes:
            if cm.is_up(n) and cm.is_alive(n):
                vms, vhds = inventory.get(n, (0, 0))
                t = max(t, cfg.writer_enumeration_base_s + cfg.writer_enumeration_per_vm_s * vms
                        + cfg.writer_enumeration_per_vhd_s * vhds
                        + cfg.writer_enumeration_per_checkpoint_s * checkpoints.get(n, 0))
        if t > cfg.writer_freeze_limit_s:
            self.enumeration_s += cfg.writer_freeze_limit_s
            yield self.env.timeout(cfg.writer_freeze_limit_s)
            self.trace("writer_enumeration_timeout", node=node, s=round(t, 6))
            raise StepFailed("vss_writer_timeout", f"writer enumeration took {t:.1f} s")
        self.enumeration_s += t
        self.trace("writer_enumeration", node=node, s=round(t, 6))
        yield self.env.timeout(t)

    def snapshot_set(self, node: str, luns: list[str], vms: tuple[str, ...], set_id: str,
                     leak_on_failover: bool = False) -> Proc:
        """Take one shadow-copy set over `luns`: writes are held from here until the provider has
        committed the set; a hardware provider commits it as one consistency-group snapshot (the
        wait behind other requests at the array counts against the hold-writes limit) [MS, V].
        The set fails whole if one LUN fails [MS], and if its requester dies or a LUN's CSV fails
        over while it is being created; then the snapshots are released, or leaked where the
        generation leaks them (ws2012, KB2878635). Returns SetResult; raises StepFailed."""
        self.snapshot_sets += 1
        t0 = self.env.now
        owners = {lun: self.cm.csvs[lun].coordinator for lun in luns}
        self.trace("snapshot_set_start", node=node, set=set_id, luns=len(luns), vms=len(vms), members=list(vms))
        if not self.cm.is_alive(node):  # asked of a host that has died (the cluster may not know yet)
            self.trace("snapshot_set_failed", node=node, set=set_id, code="node_failed")
            raise StepFailed("node_failed", node)
        cut = self._cut_off(node, luns)
        if cut:
            self.trace("snapshot_set_failed", node=node, set=set_id, code=cut)
            raise StepFailed(cut, node)
        if self.cfg.provider == "software":
            snaps = {}
            yield self.env.timeout(self.cm.array.cfg.snapshot_commit_base_s)
            try:
                for lun in luns:
                    snaps[lun] = self.cm.array.software_snapshot(lun, self.cm.csvs[lun].coordinator, set_id, vms)
                    self.sw_snapshots += 1
            except SnapshotFailure as failure:
                for s in snaps.values():
                    self.cm.array.release(s)
                self.trace("snapshot_set_failed", node=node, set=set_id, code=failure.code, csv=failure.csv)
                raise StepFailed(FAULT_REASONS.get(failure.code, failure.code), failure.csv) from None
        else:
            try:
                res = yield from self.cm.array.snapshot_set(luns, node, set_id, vms)
            except SnapshotFailure as failure:
                self.trace("snapshot_set_failed", node=node, set=set_id, code=failure.code, csv=failure.csv)
                raise StepFailed(FAULT_REASONS.get(failure.code, failure.code), failure.csv) from None
            snaps = res.snapshots
            self.lun_snapshots_in_sets += len(snaps)
            self.vms_in_sets += len(vms)
        self.held_snaps.update((s.sid, s) for s in snaps.values())
        moved = [lun for lun in luns if self.cm.csvs[lun].coordinator != owners[lun]
                 or not self.cm.is_alive(owners[lun])]
        if not self.cm.is_alive(node) or moved:  # a failover during the snapshot: the set fails
            for s in snaps.values():
                if leak_on_failover:
                    self.trace("snapshot_leaked", csv=s.csv, snapshot=s.sid, node=node)  # KB2878635
                    self.held_snaps.pop(s.sid, None)
                    if self.cm.coordinator_lost_fabric_since(s.csv, t0):
                        self.cm.leave_behind("storage_path_loss", "snapshots", s.sid)
                else:
                    self.track(self.dispose(node, [s], surfaced=False))
            code = "node_failed" if not self.cm.is_alive(node) else "csv_failover"
            self.trace("snapshot_set_failed", node=node, set=set_id, code=code)
            raise StepFailed(code, node)
        cut = self._cut_off(node, luns)
        if cut:  # the cluster network was cut (or this node's side lost quorum) while it was taken
            for s in snaps.values():
                self.track(self.dispose(node, [s], surfaced=False))
            self.trace("snapshot_set_failed", node=node, set=set_id, code=cut)
            raise StepFailed(cut, node)
        hold = self.env.now - t0
        over = hold > self.cfg.hold_writes_limit_s
        if over:
            self.hold_overruns += 1
        self.trace("snapshot_set_done", node=node, set=set_id, hold_s=round(hold, 6), over_limit=over)
        return SetResult(snaps, hold, over)

    def _cut_off(self, node: str, luns: list[str]) -> str:
        """Why a set on `node` cannot be taken now ("" if it can): its side of a partition lost
        quorum, or it cannot reach a LUN's coordinator over the cluster network."""
        if not self.cm.has_quorum(node):
            return "quorum_lost"
        if any(not self.cm.reachable(node, self.cm.csvs[lun].coordinator) for lun in luns):
            return "cluster_partition"
        return ""

    def surface(self, node: str, snaps: list[StorageSnapshot]) -> Proc:
        """The committed set's snapshot LUNs are surfaced on the requesting host (LUN mapping,
        plug-and-play arrival, rescan, mount; one LU per source LU [V]) before the set is
        complete, so inside the node's VSS lock: per-VM snapshots pay it per VM, ws2016 once.
        Slower the more snapshot LUNs the host and the array already have [P]."""
        hw = [s for s in snaps if not s.software]
        if not hw:
            return
        if not self.cm.has_fabric(node):  # the snapshot LUNs cannot be mapped to a host without its fabric
            raise StepFailed("storage_path_lost", node)
        arr = self.cm.array.cfg
        on_host = self.surfaced.get(node, 0)
        existing = self.cm.array.existing_count()
        t = arr.snapshot_surface_base_s
        for i in range(len(hw)):
            t += (arr.snapshot_surface_per_lun_s + arr.snapshot_surface_per_host_lun_s * (on_host + i)
                  + arr.snapshot_surface_per_array_snapshot_s * existing)
        self.surfaced[node] = on_host + len(hw)
        self.surfacing_s += t
        self.trace("snapshots_surfaced", node=node, luns=len(hw), s=round(t, 6))
        yield self.env.timeout(t)

    def dispose(self, node: str, snaps: list[StorageSnapshot], surfaced: bool = True) -> Proc:
        """A set's snapshots are done with: their LUNs are removed on the host that surfaced them,
        then deleted on the array (a request at each LUN's controller) [V]."""
        hw = [s for s in snaps if not s.software and s.released_s is None]
        if hw:  # the requester has asked for the deletion: the array completes it whatever happens
            self.trace("snapshots_removing", node=node, snapshots=[s.sid for s in hw])
        for s in snaps:
            self.held_snaps.pop(s.sid, None)
            self.deleting[s.sid] = s
        if surfaced and hw:
            self.surfaced[node] = max(0, self.surfaced.get(node, 0) - len(hw))
            if self.cm.is_alive(node):
                yield self.env.timeout(self.cm.array.cfg.snapshot_remove_per_lun_s * len(hw))
        yield from self.cm.array.delete(snaps)
        for s in snaps:
            self.deleting.pop(s.sid, None)

    def copy_path(self, reader: str, snap: StorageSnapshot | None, csv: str | None = None) -> list[str]:
        if snap is not None and snap.software and snap.host != reader:
            # software provider: the shadow copy lives on the coordinator; others read over SMB [MS]
            return [ARRAY_READ, fabric(snap.host), cluster_nic(snap.host), cluster_nic(reader), BACKUP_TARGET]
        if snap is None and csv is not None and not self.cm.has_fabric(reader):
            # an offline VM's files are read from its CSV, redirected over SMB while the reader has no fabric
            return [ARRAY_READ] + self.cm.csv_path(reader, csv)[::-1] + [BACKUP_TARGET]
        return [ARRAY_READ, fabric(reader), BACKUP_TARGET]

    def _copy_blocked(self, reader: str, snap: StorageSnapshot | None, path: list[str]) -> str:
        """Why a copy on this path cannot run now ("" if it can): README "Fault events"."""
        cm = self.cm
        if not cm.target_reachable():
            return "target_unreachable"
        if not cm.has_quorum(reader):
            return "quorum_lost"
        if any(link.startswith("fabric:") and not cm.has_fabric(link[len("fabric:"):]) for link in path):
            return "storage_path_lost"
        nodes = [link[len("cluster:"):] for link in path if link.startswith("cluster:")]
        if any(not cm.reachable(a, b) for a, b in zip(nodes, nodes[1:], strict=False)):
            return "cluster_partition"
        return ""

    def copy(self, vm: str, reader: str, snap: StorageSnapshot | None, mib: float) -> Proc:
        if not self.cm.is_alive(reader) or (snap is not None and snap.software and not self.cm.is_alive(snap.host)):
            raise StepFailed("node_failed", reader)
        arr = self.cm.array.cfg
        csv = self.records[vm].spec.csv
        path = self.copy_path(reader, snap, csv)
        blocked = self._copy_blocked(reader, snap, path)
        if blocked:
            raise StepFailed(blocked, reader)
        flow = self.cm.net.start(
            path, size_mib=mib, cap_mib_s=self.cfg.copy_stream_mib_s,
            tag=("copy", vm), ops_per_mib=1.0 / arr.copy_io_size_mib,
            ops_class=self.cm.array.luns[csv].controller,
        )
        nodes = [link[len("cluster:"):] for link in path if link.startswith("cluster:")]
        if len(nodes) == 2:
            self.cm.pair(flow, nodes[0], nodes[1])
        self._flows.add(flow)
        self.trace("copy_start", vm=vm, node=reader, mib=round(mib, 3))
        finished = yield flow.done
        self._flows.discard(flow)
        self.records[vm].bytes_copied_mib += flow.transferred if not finished else mib
        if not finished:
            raise StepFailed(self._copy_blocked(reader, snap, path) or "copy_interrupted", reader)
        self.trace("copy_end", vm=vm, node=reader)

    def copy_in_slot(self, vm: str, reader: str, snap: StorageSnapshot | None) -> Proc:
        """Copy the VM's backup once one of the reader's copy slots is free (at most
        `concurrent_vms_per_node` copies per node); raises StepFailed."""
        slot = self.copy_slots[reader].request()
        yield slot
        try:
            yield from self.copy(vm, reader, snap, self.bytes_to_copy(vm))
        finally:
            self.copy_slots[reader].release(slot)

    def merge(self, vm: str, cp: Checkpoint) -> Proc:
        """Merge the AVHDX back into its parent on the VM's current host (it may have moved);
        its size is what the VM wrote meanwhile. If that host dies, the merge goes on where the
        VM runs next (after a move it runs at once; after a failover, when it boots)."""
        spec = self.records[vm].spec
        left = changed_mib(spec, self.cm.block_size_mib, self.env.now - cp.created_s)
        while True:
            node = self.cm.host_of(vm)
            if not self.cm.is_alive(node) or self.cm.is_booting(vm) or self.cm.is_unplaced(vm):
                self.orphans.setdefault(vm, []).append(cp)
                return
            path = self.cm.csv_path(node, spec.csv)  # redirected while the host has no fabric
            flow = self.cm.net.start(path + [ARRAY_READ, ARRAY_WRITE], size_mib=left,
                                     cap_mib_s=self.cfg.merge_mib_s, tag=("merge", vm))
            self._flows.add(flow)
            finished = yield flow.done
            self._flows.discard(flow)
            if finished:
                break
            left = flow.remaining
        self.cm.array.merge_checkpoint(cp)
        self.held_cps.pop(cp.cid, None)
        self.avhdx_vm_s += self.env.now - cp.created_s

    def discard_checkpoint(self, cp: Checkpoint) -> None:
        """A failed attempt's checkpoint is merged away at once (Hyper-V cleans it up), or,
        if the VM's host is dead, when the VM boots again after failover."""
        if not self.cm.is_alive(self.cm.host_of(cp.vm)):
            self.orphans.setdefault(cp.vm, []).append(cp)
            return
        if cp.merged_s is None:
            self.cm.array.merge_checkpoint(cp)
            self.held_cps.pop(cp.cid, None)
            self.avhdx_vm_s += self.env.now - cp.created_s

    def create_checkpoint(self, vm: str, kind: str) -> Checkpoint:
        """An AVHDX checkpoint the job asked for (it holds it until it is merged)."""
        cp = self.cm.array.create_checkpoint(vm, kind)
        self.held_cps[cp.cid] = cp
        return cp

    def host_auto_recovery(self, node: str, vms: list[str]) -> Proc:
        """ws2008r2/ws2012: mount every VHD of the set on the host, revert it to the guest
        snapshot, dismount. Each mount costs more the more VHDs the host has mounted at once
        [seeds]. Returns {vm: reason} for VMs whose step failed (the others go on)."""
        base, exp = self.cfg.host_mount_base_s, self.cfg.host_mount_exponent
        disks = {vm: len(self.records[vm].spec.disks) for vm in vms}
        self.trace("auto_recovery_start", node=node, vms=len(vms), members=list(vms))
        for vm, n in disks.items():
            self.cm.node_op(node, "mount", vm, n)
            self.mounted_vms[(node, vm)] = self.mounted_vms.get((node, vm), 0) + n
        # The node keeps the mounts (a crash loses them); the cost follows the count of VHDs
        # this host has mounted at once, which the driver knows from its own mount requests.
        start = self.mounted.get(node, 0)
        held = start
        try:
            for n in disks.values():
                for _ in range(n):
                    held += 1
                    self.host_mounts += 1
                    yield self.env.timeout(base * held**exp)
        finally:
            self.mounted[node] = start
            if not self.dead:  # a dead backup leaves its mounts behind
                for vm, n in disks.items():
                    if self.cm.is_alive(node):
                        self.cm.node_op(node, "dismount", vm, n)
                    left = self.mounted_vms.pop((node, vm), 0) - n
                    if left > 0:
                        self.mounted_vms[(node, vm)] = left
        failed = {}
        for vm in vms:
            try:
                self.ensure_host(vm, node)
            except StepFailed as exc:
                failed[vm] = exc.reason
        self.trace("auto_recovery_done", node=node, vms=len(vms))
        return failed

    def scsi_fixup(self, vm: str, node: str) -> Proc:
        """ws2012r2: hot-add AutoRecovery.vhdx over SCSI, fix up inside the guest, remove [seeds]."""
        if not self.records[vm].spec.scsi_controller:
            raise StepFailed("event_10103_no_scsi", vm)
        self.trace("scsi_fixup_start", vm=vm, node=node)
        self.ensure_host(vm, node)
        self.vm_op(vm, node, "hot_add")
        self.hot_added_vms[vm] = node
        self.scsi_hot_adds += 1
        try:
            yield self.env.timeout(self.cfg.scsi_fixup_s)
            self.ensure_host(vm, node)
        finally:
            if not self.dead:  # a dead backup leaves the AutoRecovery disk attached
                self.hot_added_vms.pop(vm, None)
                self.vm_op(vm, node, "hot_remove")
        self.trace("scsi_fixup_done", vm=vm, node=node)

    def save_state(self, vm: str, node: str) -> Proc:
        self.ensure_host(vm, node)
        self.vm_op(vm, node, "set_state", "saved")
        self.saved_vms[vm] = (node, self.env.now)
        self.cm.save_vm(vm)
        self.cap.save(vm, self.env.now)
        self.trace("vm_saved", vm=vm, node=node)
        yield self.env.timeout(self.cfg.saved_state_downtime_s / 2)
        self.ensure_host(vm, node)

    def resume_state(self, vm: str, node: str, saved_at: float) -> Proc:
        yield self.env.timeout(self.cfg.saved_state_downtime_s / 2)
        self.resume_saved(vm, node, saved_at)

    def resume_saved(self, vm: str, node: str, saved_at: float) -> None:
        """The saved VM runs again where it was saved (if its host died, failover boots it)."""
        self.saved_vms.pop(vm, None)
        if self.vm_op(vm, node, "set_state", "running"):
            self.cm.unsave_vm(vm, node)
            self.cap.resume(vm, self.env.now)
        else:
            self.cm.unsave_vm(vm, None)
        self.records[vm].downtime_s += self.env.now - saved_at
        self.trace("vm_resumed", vm=vm, node=node)

    def bytes_to_copy(self, vm: str) -> float:
        """What the copy reads: every block (full), or the blocks change tracking says changed
        since the VM's reference point (decided at its capture point; see backup/tracking.py)."""
        rec = self.records[vm]
        plan = self.cap.copy_plan(vm)
        rec.copy, rec.copy_reason = plan.kind, plan.reason
        return self.cap.bytes_to_copy(vm)

    def verify(self) -> None:
        """Restore every VM this job backed up and record the verifier's verdict."""
        if not self.cap.on:
            return
        for vm, verdict in self.cap.verify_all().items():
            self.records[vm].verified = verdict
            self.trace("vm_verified", vm=vm, verdict=verdict, outcome=self.records[vm].outcome)

    def offline_copy(self, vm: str) -> Proc:
        """A VM that is not running: its files are copied as they are (no snapshot needed)."""
        self.begin(vm)
        self.cap.offline(vm, self.env.now)
        try:
            yield from self.copy_in_slot(vm, self.cm.host_of(vm), None)
        except StepFailed as exc:
            self.fail(vm, exc.reason)
            return
        self.finalize(vm, "offline", "vm_not_running")


