"""The shared storage array: LUNs (one per CSV), the hardware snapshot provider, checkpoints.

Durable state lives here, on the driver: storage snapshots and AVHDX checkpoints survive a
node crash.

A hardware shadow-copy set is committed as one operation: VSS holds writes on every volume of
the set and asks the provider to commit them together, and the array makes one
consistency-group snapshot across the set's LUNs [MS, V]. The array serves snapshot requests
(set commits and deletions) one at a time per controller [P]; a set waits for every controller
that owns one of its LUNs (taken in a fixed order), so sets from other nodes queue and that wait
counts against the hold-writes limit, while a set's own LUNs never queue behind each other. A
commit costs `snapshot_commit_base_s` + `snapshot_commit_per_lun_s` per LUN after the first +
`snapshot_commit_per_pending_s` per other request pending at its controllers +
`snapshot_commit_per_existing_s` per snapshot already on its fullest LUN [P]. Deleting a
snapshot after its copy is another request at its LUN's controller (`snapshot_delete_s`).

A controller can fail (`controller_fail`): its LUNs move to the surviving controller that owns
fewest LUNs (their requests queue there from now on) and move back when it returns [V]; every
request queued or in service at it fails with `controller_failover` (a set commit: the set fails
and the backup retries it; a deletion: the snapshot stays on the array, a leak counted against
the fault).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import simpy

from cluster_sim.scenario import Array

CONTROLLER_FAILOVER = "controller_failover"


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
    snapshots: dict[str, StorageSnapshot]  # csv -> its LUN's snapshot
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
        self.pending_per_controller = [0] * cfg.controllers  # requests queued or served
        self.pending = 0  # LUN snapshots requested and not yet committed (or failed)
        self.peak_pending = 0
        self.created = 0  # LUN snapshots (a set over k LUNs creates k)
        self.commits = 0  # set commits (consistency groups)
        self.failed = 0
        self.deleted = 0
        self.snapshots: dict[str, StorageSnapshot] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self.live_checkpoints: dict[str, int] = {}  # VM -> its AVHDX checkpoints not yet merged
        self._seq = 0
        # called with (vm, +1 | -1) when one of a VM's checkpoints is created or merged
        self.on_checkpoint_count: Callable[[str, int], None] | None = None
        # called with (csv) whenever the set of live snapshots on a LUN changes
        self.on_protection_change: Callable[[str], None] | None = None
        # controller failures: the controllers down, each LUN's own controller (it fails back there),
        # the processes with a request at each controller (in arrival order), and who hears of a
        # deletion that failed (the snapshot stays)
        self.down: set[int] = set()
        self.home = {c: lun.controller for c, lun in self.luns.items()}
        self._at_controller: list[dict[simpy.Process, None]] = [{} for _ in range(cfg.controllers)]
        self.on_delete_failed: Callable[[StorageSnapshot], None] | None = None

    # -- storage snapshots ---------------------------------------------------------------------
    def commit_time_s(self, luns: list[Lun]) -> float:
        c = self.cfg
        ctrls = {lun.controller for lun in luns}
        others = sum(self.pending_per_controller[k] for k in ctrls) - len(ctrls)  # not this request
        return (
            c.snapshot_commit_base_s
            + c.snapshot_commit_per_lun_s * max(0, len(luns) - 1)
            + c.snapshot_commit_per_pending_s * max(0, others)
            + c.snapshot_commit_per_existing_s * max(len(lun.existing) for lun in luns)
        )

    def _take_controllers(self, ctrls: list[int]):  # type: ignore[no-untyped-def]
        """SimPy process: request each controller in index order (no deadlock between sets);
        returns the granted requests."""
        reqs = []
        try:
            for k in ctrls:
                req = self.controllers[k].request()
                reqs.append((k, req))
                yield req
        except BaseException:
            self._give_back(reqs)
            raise
        return reqs

    def _give_back(self, reqs) -> None:  # type: ignore[no-untyped-def]
        for k, req in reqs:
            req.cancel()  # still queued (an interrupted wait): leave the queue; granted: no-op
            self.controllers[k].release(req)

    def snapshot_set(self, csvs: list[str], requester: str, set_id: str, vms: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        """SimPy process: one consistency-group commit over `csvs`; returns CommitResult with one
        snapshot per LUN. Raises SnapshotFailure (`snapshot_limit` or an injected fault on any LUN:
        the set fails whole, and every LUN's first injected fault is used up) instead."""
        luns = [self.luns[c] for c in csvs]
        ctrls = sorted({lun.controller for lun in luns})
        t0 = self.env.now
        self.pending += len(luns)
        self.peak_pending = max(self.peak_pending, self.pending)
        for k in ctrls:
            self.pending_per_controller[k] += 1
        for c in csvs:
            self.trace("snapshot_requested", csv=c, node=requester, set=set_id, pending=self.pending)
        reqs = []
        proc = self._arrive(ctrls)
        try:
            try:
                reqs = yield from self._take_controllers(ctrls)
            except simpy.Interrupt as irq:
                self._failed_over(irq, luns, requester, set_id)
            full = [lun for lun in luns if len(lun.existing) >= self.cfg.max_snapshots_per_lun]
            if full:
                self.failed += 1
                self.trace("snapshot_failed", csv=full[0].csv, node=requester, set=set_id, code="snapshot_limit",
                           luns=len(luns))
                raise SnapshotFailure("snapshot_limit", full[0].csv, f"{len(full[0].existing)} snapshots exist")
            commit = self.commit_time_s(luns)
            try:
                yield self.env.timeout(commit)
            except simpy.Interrupt as irq:
                self._failed_over(irq, luns, requester, set_id)
            faulted = [(lun, lun.faults.pop(0)) for lun in luns if lun.faults]
            if faulted:
                lun, code = faulted[0]
                self.failed += 1
                self.trace("snapshot_failed", csv=lun.csv, node=requester, set=set_id, code=code, luns=len(luns))
                raise SnapshotFailure(code, lun.csv, "injected fault")
            snaps = {}
            waited = self.env.now - t0 - commit
            for lun in luns:  # one consistency group: every LUN's snapshot at the same instant
                self._seq += 1
                snap = StorageSnapshot(f"snap-{self._seq:06d}", lun.csv, requester, set_id, self.env.now, vms)
                lun.existing[snap.sid] = snap
                lun.peak_existing = max(lun.peak_existing, len(lun.existing))
                self.snapshots[snap.sid] = snap
                self.created += 1
                snaps[lun.csv] = snap
                self.trace("snapshot_created", csv=lun.csv, node=requester, set=set_id, snapshot=snap.sid,
                           wait_s=round(waited, 6), commit_s=round(commit, 6))
            self.commits += 1
            for lun in luns:
                self._protection_changed(lun.csv)
            return CommitResult(snaps, waited, commit)
        finally:
            self._leave(proc, ctrls)
            self._give_back(reqs)
            self.pending -= len(luns)
            for k in ctrls:
                self.pending_per_controller[k] -= 1

    def _protection_changed(self, csv: str) -> None:
        if self.on_protection_change:
            self.on_protection_change(csv)

    def live_snapshot_times(self, csv: str) -> list[float]:
        """Creation times of the snapshots that exist on a LUN now (copy-on-write state)."""
        return [s.created_s for s in self.luns[csv].existing.values()]

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
        self._protection_changed(csv)
        return snap

    def release(self, snap: StorageSnapshot) -> None:
        """The snapshot no longer exists for its LUN (no copy-on-write for it, no limit slot).
        A hardware snapshot's deletion work at the array is `delete` (a request at its controller)."""
        if snap.released_s is not None:
            return
        lun = self.luns[snap.csv]
        snap.released_s = self.env.now
        lun.existing.pop(snap.sid, None)
        self.trace("snapshot_released", csv=snap.csv, snapshot=snap.sid)
        self._protection_changed(snap.csv)

    def delete(self, snaps: list[StorageSnapshot]):  # type: ignore[no-untyped-def]
        """SimPy process: delete hardware snapshots at the array, each a request at its LUN's
        controller (`snapshot_delete_s` plus the per-existing cost); software snapshots and ones
        already gone are released at once."""
        for snap in snaps:
            if snap.software or snap.released_s is not None:
                self.release(snap)
                continue
            lun = self.luns[snap.csv]
            k = lun.controller
            self.pending_per_controller[k] += 1
            proc = self._arrive([k])
            try:
                with self.controllers[k].request() as req:
                    yield req
                    yield self.env.timeout(self.cfg.snapshot_delete_s
                                           + self.cfg.snapshot_commit_per_existing_s * max(0, len(lun.existing) - 1))
                    self.deleted += 1
                    self.release(snap)
            except simpy.Interrupt as irq:
                if irq.cause != (CONTROLLER_FAILOVER, k):
                    raise
                self.trace("snapshot_delete_failed", csv=snap.csv, snapshot=snap.sid, code=CONTROLLER_FAILOVER,
                           controller=k + 1)
                if self.on_delete_failed is not None:
                    self.on_delete_failed(snap)  # it stays on the array: a leak of the fault
            finally:
                self._leave(proc, [k])
                self.pending_per_controller[k] -= 1

    # -- controller failures ---------------------------------------------------------------------
    def _arrive(self, ctrls: list[int]) -> simpy.Process | None:
        """The process asking now has a request at these controllers (a failover interrupts it)."""
        proc = self.env.active_process
        if proc is not None:
            for k in ctrls:
                self._at_controller[k][proc] = None
        return proc

    def _leave(self, proc: simpy.Process | None, ctrls: list[int]) -> None:
        if proc is not None:
            for k in ctrls:
                self._at_controller[k].pop(proc, None)

    def _failed_over(self, irq: simpy.Interrupt, luns: list[Lun], requester: str, set_id: str) -> None:
        """A set's request was at a controller that failed: the set fails (raises SnapshotFailure),
        unless the interrupt is something else (re-raised)."""
        cause = irq.cause
        if not (isinstance(cause, tuple) and len(cause) == 2 and cause[0] == CONTROLLER_FAILOVER):
            raise irq
        k = cause[1]
        lun = next((x for x in luns if self.home[x.csv] == k or x.controller == k), luns[0])
        self.failed += 1
        self.trace("snapshot_failed", csv=lun.csv, node=requester, set=set_id, code=CONTROLLER_FAILOVER,
                   luns=len(luns), controller=k + 1)
        raise SnapshotFailure(CONTROLLER_FAILOVER, lun.csv, f"controller {k + 1} failed")

    def fail_controller(self, k: int) -> list[str]:
        """Controller k (0-based) fails: its LUNs move to the surviving controller owning fewest
        LUNs (lowest index on a tie), and every request queued or in service at it fails. Returns
        the CSVs whose LUN moved."""
        if k in self.down:
            return []
        self.down.add(k)
        survivors = [c for c in range(self.cfg.controllers) if c not in self.down]
        if not survivors:
            raise ValueError("every array controller is down")  # the scenario check prevents it
        owned = {c: sum(1 for lun in self.luns.values() if lun.controller == c) for c in survivors}
        moved = []
        for lun in self.luns.values():
            if lun.controller == k:
                to = min(survivors, key=lambda c: (owned[c], c))
                owned[to] += 1
                lun.controller = to
                moved.append(lun.csv)
                self.trace("lun_failover", csv=lun.csv, controller=k + 1, to=to + 1)
        for proc in list(self._at_controller[k]):
            for waiting in self._at_controller:  # interrupted once, even if another controller fails now
                waiting.pop(proc, None)
            if proc.is_alive:
                proc.interrupt((CONTROLLER_FAILOVER, k))
        return moved

    def restore_controller(self, k: int) -> list[str]:
        """Controller k is back: its own LUNs fail back to it [V]; returns the CSVs moved."""
        if k not in self.down:
            return []
        self.down.discard(k)
        moved = []
        for lun in self.luns.values():
            if self.home[lun.csv] == k and lun.controller != k:
                self.trace("lun_failback", csv=lun.csv, controller=lun.controller + 1, to=k + 1)
                lun.controller = k
                moved.append(lun.csv)
        return moved

    def inject_fault(self, csv: str, code: str, count: int = 1) -> None:
        self.luns[csv].faults.extend([code] * count)

    # -- checkpoints (AVHDX) ---------------------------------------------------------------------
    def create_checkpoint(self, vm: str, kind: str) -> Checkpoint:
        self._seq += 1
        cp = Checkpoint(f"cp-{self._seq:06d}", vm, kind, self.env.now)
        self.checkpoints[cp.cid] = cp
        self.live_checkpoints[vm] = self.live_checkpoints.get(vm, 0) + 1
        if self.on_checkpoint_count is not None:
            self.on_checkpoint_count(vm, 1)
        self.trace("checkpoint_created", vm=vm, checkpoint=cp.cid, kind=kind)
        return cp

    def merge_checkpoint(self, cp: Checkpoint) -> None:
        if cp.merged_s is None:
            cp.merged_s = self.env.now
            left = self.live_checkpoints.get(cp.vm, 0) - 1
            if left > 0:
                self.live_checkpoints[cp.vm] = left
            else:
                self.live_checkpoints.pop(cp.vm, None)
            if self.on_checkpoint_count is not None:
                self.on_checkpoint_count(cp.vm, -1)
            self.trace("checkpoint_merged", vm=cp.vm, checkpoint=cp.cid)

    # -- accounting ------------------------------------------------------------------------------
    def leaked_snapshots(self) -> list[StorageSnapshot]:
        return [s for s in self.snapshots.values() if s.released_s is None]

    def leaked_checkpoints(self) -> list[Checkpoint]:
        return [c for c in self.checkpoints.values() if c.merged_s is None]

    def existing_count(self) -> int:
        """Snapshots that exist on the array now, all LUNs together."""
        return sum(len(lun.existing) for lun in self.luns.values())

    def peak_per_lun(self) -> int:
        return max((lun.peak_existing for lun in self.luns.values()), default=0)
