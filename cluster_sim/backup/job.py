"""The backup job: it backs up every VM of the fleet once (plus retries), each VM ending with
exactly one outcome and a reason. It is composed of the ledger (backup/ledger.py: records, outcomes,
retries), the step library (backup/steps.py, backup/snapshots.py) and what a dying backup
application leaves behind (backup/leftovers.py); the generations (ws2008r2.py .. ws2016.py) put
the steps together in their own order.

Every process of a job is started through `spawn` (or `track`, `attempt`), so that the job can die
with the backup application (`backup_server_crash`, `kill`): its processes stop where they are, and
what it held is released only where the cluster or the guests do it themselves; the rest is left
behind and recorded in the cluster's fault ledger (README "Fault events").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import simpy

from cluster_sim.backup.capture import Captures
from cluster_sim.backup.eligibility import plan
from cluster_sim.backup.ledger import KILLED, Ledger, Proc, StepFailed, VmRecord
from cluster_sim.backup.leftovers import Leftovers
from cluster_sim.backup.policy import ClusterView, Commands, PolicyError
from cluster_sim.backup.snapshots import SnapshotSteps
from cluster_sim.backup.steps import Steps
from cluster_sim.cluster.storage import Checkpoint, StorageSnapshot

if TYPE_CHECKING:
    from cluster_sim.backup.context import BackupContext
    from cluster_sim.cluster.model import ClusterModel
    from cluster_sim.scenario import Backup


class BackupJob(Ledger, Steps, SnapshotSteps, Leftovers):
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
        self._enumerated: tuple | None = None  # (snapshots.py writer_enumeration)
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
        # the policy deciding grouping, order, concurrency, retries and reactions (backup/policy.py),
        # what it reads and what it does through; snapshots it holds past their group's end
        self.policy = ctx.policy
        self.view = ClusterView(self)
        self.cmd = Commands(self)
        self.policy_holds: dict[str, int] = {}  # snapshot id -> holds the policy has not given back
        self.policy_parked: dict[str, tuple[str, StorageSnapshot, bool]] = {}  # held after its group ended
        self.set_slots: simpy.Resource | None = None  # ws2016: the policy's sets_in_flight
        self.paused_until: dict[str, float] = {}  # node (or "*": all) -> no new group before (Commands)
        self._disconnect += [cm.on_node_failed.connect(self._node_failed),
                             cm.on_csv_owner_changed.connect(self._csv_owner_changed)]

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


    # -- migration policy and moves --------------------------------------------------------------
    def gate(self, vm: str) -> str:
        """Asked by a live migration: may this VM move now?"""
        if not self.running or vm not in self.critical:
            return "ok"
        answer = self.policy.on_migration_request(self.view, vm)
        if answer == "abort":
            self.aborted.add(vm)
            self.trace("backup_aborted_by_migration", vm=vm)
        elif answer not in ("ok", "refuse"):
            raise PolicyError(f"{self.policy.name}.on_migration_request must answer ok, refuse or abort, "
                              f"got {answer!r:.80}")
        return answer

    def _node_failed(self, node: str) -> None:
        if self.running:
            self.policy.on_node_failed(self.view, self.cmd, node)

    def _csv_owner_changed(self, csv: str, previous: str, owner: str) -> None:
        if self.running:
            self.policy.on_csv_owner_changed(self.view, self.cmd, csv, previous, owner)

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
        self.policy.on_job_start(self.view, self.cmd)
        for name in sorted(self.records):
            rec = self.records[name]
            if rec.plan.mode == "fail":
                self.begin(name)
                self.finalize(name, "failed", rec.plan.reason)
            elif rec.plan.mode == "offline":
                self.track(self.offline_copy(name))
        yield from body(self)

    def online_vms(self) -> list[str]:
        """The VMs backed up online that have no outcome yet (all of them, unless the job restarted)."""
        return sorted(n for n, r in self.records.items()
                      if r.plan.mode in ("app", "crash", "saved_state") and r.outcome is None)

    def verify(self) -> None:
        """Restore every VM this job backed up and record the verifier's verdict."""
        if not self.cap.on:
            return
        for vm, verdict in self.cap.verify_all().items():
            self.records[vm].verified = verdict
            self.trace("vm_verified", vm=vm, verdict=verdict, outcome=self.records[vm].outcome)



