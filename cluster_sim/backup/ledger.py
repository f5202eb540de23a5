"""The job's ledger: each VM's record (its attempts, its outcome and why), the outcomes and failure
reasons as names, and the bookkeeping every generation shares: an attempt begins, fails (retried
after `retry_wait_s`, up to `retries` times, unless the failure is permanent [V]) or ends with
exactly one outcome.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import simpy

from cluster_sim.backup.eligibility import Plan
from cluster_sim.backup.policy import VmFailure, retry_after_s
from cluster_sim.cluster.storage import StorageSnapshot
from cluster_sim.scenario.placement import VmSpec


class Outcome(StrEnum):
    """What a VM's backup ended as (vms.csv `outcome`)."""

    APP_CONSISTENT = "app_consistent"  # guest VSS writers took part (or a production checkpoint)
    CRASH_CONSISTENT = "crash_consistent"  # the disks as a power cut would leave them
    SAVED_STATE = "saved_state"  # saved while its storage snapshot was taken (ws2008r2/ws2012)
    OFFLINE = "offline"  # not running: its files are copied as they are
    FAILED = "failed"


class Failure(StrEnum):
    """Why an attempt failed (vms.csv `reason` of a failed VM, summary `failures_by_reason`); the
    snapshot faults' codes (FAULT_REASONS) and the eligibility reasons (backup/eligibility.py) too."""

    NODE_FAILED = "node_failed"  # its host (or the set node) died or left the cluster
    VM_MOVED = "vm_moved"  # the VM moved (migration, failover) during a step on its old host
    ABORTED_BY_MIGRATION = "aborted_by_migration"  # migration_policy abort_backup
    QUORUM_LOST = "quorum_lost"  # its side of a partition lost quorum
    CLUSTER_PARTITION = "cluster_partition"  # cannot reach a CSV coordinator over the cluster network
    STORAGE_PATH_LOST = "storage_path_lost"  # the node lost its storage fabric
    TARGET_UNREACHABLE = "target_unreachable"  # the backup target is down
    CSV_FAILOVER = "csv_failover"  # a CSV moved during its snapshot [MS]
    SNAPSHOT_SET_IN_PROGRESS = "snapshot_set_in_progress"  # VSS allows one set creation per node [MS]
    VSS_WRITER_TIMEOUT = "vss_writer_timeout"  # freeze to thaw past writer_freeze_limit_s [MS]
    VSS_HOLD_WRITES_TIMEOUT = "vss_hold_writes_timeout"  # commit past hold_writes_limit_s [MS]
    SNAPSHOT_LIMIT = "snapshot_limit"  # the array's snapshots per LUN are used up [V]
    EVENT_10103_NO_SCSI = "event_10103_no_scsi"  # ws2012r2 fix-up needs a SCSI controller [seeds]
    PRODUCTION_CHECKPOINT_FAILED = "production_checkpoint_failed"  # ws2016 without fallback [MS]
    AUTORECOVERY_AVHDX_LEFTOVER = "autorecovery_avhdx_leftover"  # 0x800423FB after a dead fix-up [MS]
    BACKUP_SERVER_CRASHED = "backup_server_crashed"  # the job died without a restart


Proc = Generator[simpy.Event, Any, Any]

# Failures a retry can cure; the rest are properties of the VM and fail at once.
# A leftover AutoRecovery.avhdx (from a backup that died during the ws2012r2 fix-up) makes every
# later backup of the VM fail with 0x800423FB until someone removes it [MS].
PERMANENT = {Failure.EVENT_10103_NO_SCSI, Failure.PRODUCTION_CHECKPOINT_FAILED, Failure.AUTORECOVERY_AVHDX_LEFTOVER}
KILLED = "backup_server_crash"  # the cause of the interrupt that ends a dead job's processes
SERVER_CRASHED = Failure.BACKUP_SERVER_CRASHED  # the reason of a VM whose job died without a restart

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
    attempt_base: int = 0  # attempts before the job was restarted (its retries start again)
    node: str = ""  # where the current attempt began


@dataclass
class SetResult:
    snaps: dict[str, StorageSnapshot]
    hold_s: float
    over_hold_limit: bool



class Ledger:
    """Mixed into BackupJob (backup/job.py): outcomes, attempts and retries."""

    def finalize(self, vm: str, outcome: str, reason: str = "") -> None:
        rec = self.records[vm]
        if rec.outcome is not None:
            rec.double_outcomes += 1  # the auditor reports this
            return
        rec.outcome = outcome
        rec.reason = reason
        rec.end_s = self.env.now
        self.trace.close_span(("retry_wait", vm))
        self.trace.close_span(("attempt", vm), outcome + (f": {reason}" if reason else ""))
        if outcome != "failed":
            self.cap.succeeded(vm)
        self.trace("vm_outcome", vm=vm, outcome=outcome, reason=reason, attempts=rec.attempts)
        self.policy.on_vm_done(self.view, self.cmd, vm, outcome, reason)
        self.remaining -= 1
        if self.remaining == 0 and not self.done.triggered:
            self.ended_s = self.env.now
            self.running = False
            self.cm.io.set_phase("after")
            self.trace("job_end", generation=self.gen)
            self.done.succeed()
        self._check_quiet()

    def begin(self, vm: str) -> None:
        rec = self.records[vm]
        rec.attempts += 1
        rec.incarnation = self.cm.incarnation_of(self.cm.host_of(vm))
        self.cap.begin(vm)
        if rec.start_s is None:
            rec.start_s = self.env.now
        node = rec.node = self.cm.host_of(vm)
        self.trace("vm_attempt", vm=vm, attempt=rec.attempts, node=node)
        self.trace.close_span(("retry_wait", vm))
        self.trace.open_span(("attempt", vm), "attempt", vm, node, rec.attempts)

    def span(self, phase: str, vm: str, node: str) -> Any:
        """`with job.span(phase, vm, node):` the block is that phase of the VM's current attempt
        (report/spans.py draws them)."""
        return self.trace.span(phase, vm, node, self.records[vm].attempts)

    def open_spans(self, phase: str, vms: Any) -> list[Any]:
        """Open a span of `phase` for each VM (on the node its attempt began on); returns the keys."""
        keys = []
        for vm in vms:
            rec = self.records[vm]
            key = (phase, vm, object())
            self.trace.open_span(key, phase, vm, rec.node, rec.attempts)
            keys.append(key)
        return keys

    def close_spans(self, keys: list[Any]) -> None:
        for key in keys:
            self.trace.close_span(key)

    def fail(self, vm: str, reason: str) -> None:
        """This attempt failed: retry later if allowed, else the VM's outcome is `failed`."""
        rec = self.records[vm]
        self.critical.discard(vm)
        self.aborted.discard(vm)
        if rec.outcome is not None:
            return
        self.trace("vm_attempt_failed", vm=vm, reason=reason, attempt=rec.attempts)
        self.trace.close_span(("attempt", vm), f"failed: {reason}")
        # the policy decides (backup/policy.py; built in: retry what a retry can cure after
        # retry_wait_s, at most `retries` times)
        # the snapshot of this attempt's group, if committed and not yet deleted (not one an earlier
        # attempt's group left with the policy)
        sid = rec.snapshot_id if rec.snapshot_id in self.held_snaps and rec.snapshot_id not in self.policy_parked \
            else None
        failure = VmFailure(vm, reason, rec.attempts - rec.attempt_base, reason in PERMANENT, rec.node, sid)
        after_s = retry_after_s(self.policy, self.policy.on_vm_failed(self.view, self.cmd, failure))
        if after_s is not None:
            self.trace.open_span(("retry_wait", vm), "retry_wait", vm, self.cm.host_of(vm), rec.attempts)
            self.track(self._retry_later(vm, after_s))
        else:
            self.finalize(vm, "failed", reason)

    def _retry_later(self, vm: str, after_s: float) -> Proc:
        yield self.env.timeout(after_s)
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
