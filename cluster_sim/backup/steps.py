"""The job's steps that every generation is built from (a VM's host checked, guest freeze and thaw,
saved state, checkpoints and their merge, host auto-recovery and the SCSI fix-up, the copy), each
a SimPy process or a call that raises StepFailed with the reason the VM reports."""

from __future__ import annotations

import math
from typing import Any

import simpy

from cluster_sim.backup.ledger import Proc, StepFailed
from cluster_sim.cluster.storage import Checkpoint, StorageSnapshot
from cluster_sim.cluster.topology import ARRAY_READ, ARRAY_WRITE, BACKUP_TARGET, cluster_nic, fabric
from cluster_sim.cluster.writes import changed_mib

FREEZE_STREAM = "guest_freeze"  # a VM's random stream of its guest freeze times: ("vm", name, FREEZE_STREAM)


class Steps:
    """Mixed into BackupJob (backup/job.py)."""

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
        rng = self.ctx.streams.get("vm", vm, FREEZE_STREAM)
        if spec.guest_os == "linux":
            d = float(self.cfg.linux_freeze_median_s * math.exp(self.cfg.guest_freeze_sigma * rng.standard_normal()))
            limit, code = self.cfg.linux_freeze_limit_s, "linux_freeze_timeout"
        else:
            d = float(self.cfg.guest_freeze_median_s * math.exp(self.cfg.guest_freeze_sigma * rng.standard_normal()))
            limit, code = self.cfg.writer_freeze_limit_s, "vss_writer_timeout"
        with self.span("freeze", vm, node):
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
        with self.span("copy", vm, reader):
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
        with self.span("merge", vm, self.cm.host_of(vm)):
            merged = yield from self._merge_flows(vm, spec, cp, left)
        if not merged:
            return
        self.cm.array.merge_checkpoint(cp)
        self.held_cps.pop(cp.cid, None)
        self.avhdx_vm_s += self.env.now - cp.created_s

    def _merge_flows(self, vm: str, spec: Any, cp: Checkpoint, left: float) -> Proc:
        """The merge's I/O, moved along with the VM; False if its host died (an orphan then)."""
        while True:
            node = self.cm.host_of(vm)
            if not self.cm.is_alive(node) or self.cm.is_booting(vm) or self.cm.is_unplaced(vm):
                self.orphans.setdefault(vm, []).append(cp)
                return False
            path = self.cm.csv_path(node, spec.csv)  # redirected while the host has no fabric
            flow = self.cm.net.start(path + [ARRAY_READ, ARRAY_WRITE], size_mib=left,
                                     cap_mib_s=self.cfg.merge_mib_s, tag=("merge", vm))
            self._flows.add(flow)
            finished = yield flow.done
            self._flows.discard(flow)
            if finished:
                return True
            left = flow.remaining

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
        self.trace("auto_recovery_start", node=node, vms=len(vms), members=list(vms))
        spans = self.open_spans("auto_recovery", vms)
        try:
            return (yield from self._mount_revert_dismount(node, vms))
        finally:
            self.close_spans(spans)

    def _mount_revert_dismount(self, node: str, vms: list[str]) -> Proc:
        base, exp = self.cfg.host_mount_base_s, self.cfg.host_mount_exponent
        disks = {vm: len(self.records[vm].spec.disks) for vm in vms}
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
            with self.span("auto_recovery", vm, node):
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
        self.trace.open_span(("paused", vm), "paused", vm, node, self.records[vm].attempts)
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
        self.trace.close_span(("paused", vm))

    def bytes_to_copy(self, vm: str) -> float:
        """What the copy reads: every block (full), or the blocks change tracking says changed
        since the VM's reference point (decided at its capture point; see backup/tracking.py)."""
        rec = self.records[vm]
        plan = self.cap.copy_plan(vm)
        rec.copy, rec.copy_reason = plan.kind, plan.reason
        shared = self.ctx.guest.shared_bytes(self, vm) if self.ctx.guest is not None else 0.0  # backup/guest.py
        return self.cap.bytes_to_copy(vm) + shared

    def offline_copy(self, vm: str) -> Proc:
        """A VM that is not running: its files are copied as they are (no snapshot needed). Not
        while its node is on a side of a partition without quorum: the cluster service is stopped
        there and its CSVs are out of reach [MS]; the copy waits, as a running VM's backup waits
        for its VM to be back."""
        step = self.cm.failure_detection_s
        while not self.cm.has_quorum(self.cm.host_of(vm)):
            yield self.env.timeout(step)
        self.begin(vm)
        self.cap.offline(vm, self.env.now)
        try:
            yield from self.copy_in_slot(vm, self.cm.host_of(vm), None)
        except StepFailed as exc:
            self.fail(vm, exc.reason)
            return
        self.finalize(vm, "offline", "vm_not_running")
