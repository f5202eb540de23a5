"""The job's snapshot steps: writer enumeration, the hardware snapshot set (one consistency-group
commit at the array), surfacing its LUNs on the requesting host and disposing of it (README "What
a storage snapshot costs")."""

from __future__ import annotations

from cluster_sim.backup.ledger import FAULT_REASONS, Proc, SetResult, StepFailed
from cluster_sim.cluster.storage import SnapshotFailure, StorageSnapshot


class SnapshotSteps:
    """Mixed into BackupJob (backup/job.py)."""

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
        inventory = cm.node_inventory()  # (the same object until a VM moves)
        checkpoints = cm.checkpoints_by_node()
        live = cm.live_nodes()
        last = self._enumerated  # the nodes' counts at the last set, and its time: kept while they hold
        if last is not None and last[0] is inventory and last[1] == checkpoints and last[2] == live:
            t = last[3]
        else:
            t = 0.0  # the slowest live node's (the parameters read once: a set per VM, 64 nodes each)
            base, per_vm = cfg.writer_enumeration_base_s, cfg.writer_enumeration_per_vm_s
            per_vhd, per_checkpoint = cfg.writer_enumeration_per_vhd_s, cfg.writer_enumeration_per_checkpoint_s
            counts, taken = inventory.get, checkpoints.get
            for n in live:
                vms, vhds = counts(n, (0, 0))
                x = base + per_vm * vms + per_vhd * vhds + per_checkpoint * taken(n, 0)
                if x > t:  # (as max(t, x))
                    t = x
            self._enumerated = (inventory, checkpoints, live, t)
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
        generation leaks them (ws2012, KB2878635). Returns SetResult; raises StepFailed.
        For its members it is their `snapshot` phase."""
        spans = self.open_spans("snapshot", vms)
        try:
            return (yield from self._snapshot_set(node, luns, vms, set_id, leak_on_failover))
        finally:
            self.close_spans(spans)

    def _snapshot_set(self, node: str, luns: list[str], vms: tuple[str, ...], set_id: str,
                      leak_on_failover: bool) -> Proc:
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

    def new_set_id(self) -> str:
        self._set_seq += 1
        return f"set-{self._set_seq:05d}"
