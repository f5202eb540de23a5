"""What a dying backup application leaves behind, and its restart (README "Fault events").

When the application dies (`backup_server_crash`) the job's processes stop where they are and its
copy and merge streams end. What it held is released only where the cluster or the guests do it
themselves; the rest is recorded in the cluster's fault ledger. Restarted, the job starts again for
the VMs without an outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import simpy

from cluster_sim.backup.ledger import KILLED, SERVER_CRASHED, Proc

if TYPE_CHECKING:
    from cluster_sim.backup.job import BackupJob


class Leftovers:
    """Mixed into BackupJob (backup/job.py)."""

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
