"""The shared storage array: LUNs (one per CSV), the hardware snapshot provider, checkpoints.

Durable state lives here, on the driver: storage snapshots and AVHDX checkpoints survive a
node crash. The array serves snapshot requests one at a time per controller; a commit costs
`snapshot_commit_base_s` plus a queueing cost per snapshot pending on the controller and per
snapshot already on the LUN [P] (DOMAIN.md, Storage array).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import simpy

from cluster_sim.scenario import Array


@dataclass
class StorageSnapshot:
    sid: str
    csv: str
    requester: str  # node that asked for it
    set_id: str
    created_s: float
    vms: tuple[str, ...] = ()
    released_s: float | None = None
    software: bool = False  # software provider: the shadow copy lives on `host` [MS]
    host: str = ""


@dataclass
class Checkpoint:
    cid: str
    vm: str
    kind: str  # production | standard | backup (ws2012r2 AVHDX)
    created_s: float
    merged_s: float | None = None


class SnapshotFailure(Exception):
    # SimPy re-creates a failed process's exception as type(e)(*e.args): keep args = the fields
    def __init__(self, code: str, csv: str, detail: str = ""):
        super().__init__(code, csv, detail)
        self.code = code
        self.csv = csv
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code} on {self.csv}{': ' + self.detail if self.detail else ''}"


@dataclass
class CommitResult:
    snapshot: StorageSnapshot
    waited_s: float
    commit_s: float


@dataclass
class Lun:
    csv: str
    controller: int
    existing: dict[str, StorageSnapshot] = field(default_factory=dict)
    peak_existing: int = 0
    faults: list[str] = field(default_factory=list)  # injected fault codes, used first-in first-out


class StorageArray:
    def __init__(self, env: simpy.Environment, cfg: Array, csvs: list[str], trace: Callable[..., None]):
        self.env = env
        self.cfg = cfg
        self.trace = trace
        self.luns = {c: Lun(c, i % cfg.controllers) for i, c in enumerate(csvs)}
        self.controllers = [simpy.Resource(env, capacity=1) for _ in range(cfg.controllers)]
        self.pending_per_controller = [0] * cfg.controllers
        self.pending = 0
        self.peak_pending = 0
        self.created = 0
        self.failed = 0
        self.snapshots: dict[str, StorageSnapshot] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self._seq = 0
        self.on_protection_change: Callable[[str, bool], None] | None = None

    # -- storage snapshots ---------------------------------------------------------------------
    def commit_time_s(self, lun: Lun) -> float:
        c = self.cfg
        return (
            c.snapshot_commit_base_s
            + c.snapshot_commit_per_pending_s * max(0, self.pending_per_controller[lun.controller] - 1)
            + c.snapshot_commit_per_existing_s * len(lun.existing)
        )

    def snapshot(self, csv: str, requester: str, set_id: str, vms: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        """SimPy process: queue for the LUN's controller, commit, return CommitResult.

        Raises SnapshotFailure with a code (`snapshot_limit`, or an injected fault) instead."""
        lun = self.luns[csv]
        t0 = self.env.now
        self.pending += 1
        self.pending_per_controller[lun.controller] += 1
        self.peak_pending = max(self.peak_pending, self.pending)
        self.trace("snapshot_requested", csv=csv, node=requester, set=set_id, pending=self.pending)
        try:
            with self.controllers[lun.controller].request() as req:
                yield req
                if len(lun.existing) >= self.cfg.max_snapshots_per_lun:
                    self.failed += 1
                    self.trace("snapshot_failed", csv=csv, node=requester, set=set_id, code="snapshot_limit")
                    raise SnapshotFailure("snapshot_limit", csv, f"{len(lun.existing)} snapshots exist")
                commit = self.commit_time_s(lun)
                yield self.env.timeout(commit)
                if lun.faults:
                    code = lun.faults.pop(0)
                    self.failed += 1
                    self.trace("snapshot_failed", csv=csv, node=requester, set=set_id, code=code)
                    raise SnapshotFailure(code, csv, "injected fault")
                self._seq += 1
                snap = StorageSnapshot(f"snap-{self._seq:06d}", csv, requester, set_id, self.env.now, vms)
                lun.existing[snap.sid] = snap
                lun.peak_existing = max(lun.peak_existing, len(lun.existing))
                self.snapshots[snap.sid] = snap
                self.created += 1
                self.trace("snapshot_created", csv=csv, node=requester, set=set_id, snapshot=snap.sid,
                           wait_s=round(self.env.now - t0 - commit, 6), commit_s=round(commit, 6))
                if len(lun.existing) == 1 and self.on_protection_change:
                    self.on_protection_change(csv, True)
                return CommitResult(snap, self.env.now - t0 - commit, commit)
        finally:
            self.pending -= 1
            self.pending_per_controller[lun.controller] -= 1

    def software_snapshot(self, csv: str, host: str, set_id: str, vms: tuple[str, ...] = ()) -> StorageSnapshot:
        """Software provider (volsnap): copy-on-write on the coordinator, not an array snapshot."""
        lun = self.luns[csv]
        if lun.faults:
            code = lun.faults.pop(0)
            self.failed += 1
            self.trace("snapshot_failed", csv=csv, node=host, set=set_id, code=code, software=True)
            raise SnapshotFailure(code, csv, "injected fault")
        if len(lun.existing) >= self.cfg.max_snapshots_per_lun:
            self.failed += 1
            self.trace("snapshot_failed", csv=csv, node=host, set=set_id, code="snapshot_limit", software=True)
            raise SnapshotFailure("snapshot_limit", csv, f"{len(lun.existing)} snapshots exist")
        self._seq += 1
        snap = StorageSnapshot(f"swsnap-{self._seq:06d}", csv, host, set_id, self.env.now, vms, software=True, host=host)
        lun.existing[snap.sid] = snap
        lun.peak_existing = max(lun.peak_existing, len(lun.existing))
        self.snapshots[snap.sid] = snap
        self.trace("snapshot_created", csv=csv, node=host, set=set_id, snapshot=snap.sid, software=True)
        if len(lun.existing) == 1 and self.on_protection_change:
            self.on_protection_change(csv, True)
        return snap

    def release(self, snap: StorageSnapshot) -> None:
        if snap.released_s is not None:
            return
        lun = self.luns[snap.csv]
        snap.released_s = self.env.now
        lun.existing.pop(snap.sid, None)
        self.trace("snapshot_released", csv=snap.csv, snapshot=snap.sid)
        if not lun.existing and self.on_protection_change:
            self.on_protection_change(snap.csv, False)

    def inject_fault(self, csv: str, code: str, count: int = 1) -> None:
        self.luns[csv].faults.extend([code] * count)

    # -- checkpoints (AVHDX) ---------------------------------------------------------------------
    def create_checkpoint(self, vm: str, kind: str) -> Checkpoint:
        self._seq += 1
        cp = Checkpoint(f"cp-{self._seq:06d}", vm, kind, self.env.now)
        self.checkpoints[cp.cid] = cp
        self.trace("checkpoint_created", vm=vm, checkpoint=cp.cid, kind=kind)
        return cp

    def merge_checkpoint(self, cp: Checkpoint) -> None:
        if cp.merged_s is None:
            cp.merged_s = self.env.now
            self.trace("checkpoint_merged", vm=cp.vm, checkpoint=cp.cid)

    # -- accounting ------------------------------------------------------------------------------
    def leaked_snapshots(self) -> list[StorageSnapshot]:
        return [s for s in self.snapshots.values() if s.released_s is None]

    def leaked_checkpoints(self) -> list[Checkpoint]:
        return [c for c in self.checkpoints.values() if c.merged_s is None]

    def peak_per_lun(self) -> int:
        return max((lun.peak_existing for lun in self.luns.values()), default=0)
