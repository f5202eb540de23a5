"""The backup application itself: it can crash (`backup_server_crash`) and come back.

When it dies the running job dies with it (BackupJob.kill): its processes stop where they are,
and what it held is released only by the cluster's and the guests' own mechanisms or left behind
(README "Fault events"). With `restart_after_s` the application starts again after that long and
the job goes on for the VMs without an outcome (BackupJob.restart); without it, those VMs fail
(`backup_server_crashed`), and so does every VM of a scheduled job due while it is down.
A ws2012r2 backup that died during the in-guest fix-up leaves the AutoRecovery disk attached to the
VM; every later backup of that VM fails with 0x800423FB (`autorecovery_avhdx_leftover`) [MS].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import simpy

    from cluster_sim.backup.job import BackupJob
    from cluster_sim.backup.ledger import Proc
    from cluster_sim.cluster.model import ClusterModel


class BackupServer:
    def __init__(self, cm: ClusterModel, body: Callable[[BackupJob], Proc]):
        self.cm = cm
        self.body = body  # the generation's job body (a restarted job runs it again)
        self.down = False
        self.back: simpy.Event | None = None  # fires when it is up again (None: down for good)
        self.job: BackupJob | None = None  # the job it runs or ran last
        self.killed: BackupJob | None = None  # a job that died with it and waits for its restart
        self.autorecovery_leftover: set[str] = set()  # VMs with a leftover AutoRecovery.avhdx
        self.crashes = 0
        cm.on_backup_server_crash.connect(self.crash)

    def crash(self, restart_after_s: float | None) -> None:
        cm = self.cm
        if self.down:  # already down: nothing more to lose
            cm.trace("backup_server_crash_ignored", reason="already_down")
            return
        self.down = True
        self.crashes += 1
        job = self.job
        running = job is not None and job.started_s is not None and not job.done.triggered
        cm.trace("backup_server_crashed", restart_after_s=restart_after_s,
                 job=job.index if running and job is not None else None)
        if restart_after_s is not None:
            self.back = cm.env.event()
            cm.env.process(self._restart_later(restart_after_s))
        if running and job is not None:
            job.kill(restart=restart_after_s is not None)
            if restart_after_s is not None:
                self.killed = job

    def _restart_later(self, after_s: float) -> Iterator[Any]:
        env = self.cm.env
        yield env.timeout(after_s)
        self.down = False
        self.cm.trace("backup_server_restarted")
        back, self.back = self.back, None
        job, self.killed = self.killed, None
        if job is not None:
            job.restart(self.body)
        if back is not None:
            back.succeed()
