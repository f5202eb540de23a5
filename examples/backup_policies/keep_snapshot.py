"""Keep a failed attempt's storage snapshot until the VM's retry has ended (so that an operator can
mount it to see what went wrong), then delete it; and its seeded bug.

`LeakyKeepSnapshot` forgets the release when the retry succeeds: it only gives the snapshot back
when the VM finally fails. Every snapshot it keeps for a VM whose retry works stays on the array
until someone deletes it by hand; `assert_no_leaks` catches it."""

from __future__ import annotations

from cluster_sim.backup.policy import ClusterView, Commands, Decision, Policy, Retry, VmFailure


class KeepSnapshotForRetry(Policy):
    def __init__(self, args, cfg):  # type: ignore[no-untyped-def]
        super().__init__(args, cfg)
        self.kept: dict[str, list[str]] = {}  # vm -> snapshots held for it

    def on_vm_failed(self, view: ClusterView, cmd: Commands, failure: VmFailure) -> Decision:
        decision = super().on_vm_failed(view, cmd, failure)
        if isinstance(decision, Retry) and failure.snapshot_id is not None:
            cmd.hold_snapshot(failure.snapshot_id)
            self.kept.setdefault(failure.vm, []).append(failure.snapshot_id)
            cmd.note("snapshot_kept", vm=failure.vm, snapshot=failure.snapshot_id)
        return decision

    def on_vm_done(self, view: ClusterView, cmd: Commands, vm: str, outcome: str, reason: str) -> None:
        for sid in self.kept.pop(vm, []):
            cmd.release_snapshot(sid)


class LeakyKeepSnapshot(KeepSnapshotForRetry):
    """The seeded bug: the snapshot is released only when the VM gives up, not after a good retry."""

    def on_vm_done(self, view: ClusterView, cmd: Commands, vm: str, outcome: str, reason: str) -> None:
        if outcome == "failed":
            super().on_vm_done(view, cmd, vm, outcome, reason)
