"""What a generation's backup keeps across the jobs of its schedule, and the schedule itself.

- the data plane (durable disk contents; None with `backup.verify: false`) that captures read and
  restores are checked against, and each VM's restore chain (the last restored image);
- change tracking (backup/tracking.py): each VM's reference point, RCT or a vendor's filter;
- the backup application (backup/server.py), which may crash and come back.

`run_schedule` runs the jobs one after the other (each at its time, or when the previous one is
done), restores and verifies each job's backups when it is done, then lets the cluster settle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cluster_sim.backup.guest import GuestClusters
from cluster_sim.backup.mixed import MixedBackup
from cluster_sim.backup.policy import make_policy
from cluster_sim.backup.server import BackupServer
from cluster_sim.backup.steps import FREEZE_STREAM
from cluster_sim.backup.tracking import ChangeTracker, tracking_kind

if TYPE_CHECKING:
    import numpy as np

    from cluster_sim.backup.job import BackupJob
    from cluster_sim.backup.ledger import Proc
    from cluster_sim.cluster.model import ClusterModel
    from cluster_sim.data.plane import DataPlane
    from cluster_sim.kernel.rng import Streams
    from cluster_sim.scenario import Backup


class BackupContext:
    def __init__(self, cm: ClusterModel, generation: str, cfg: Backup, plane: DataPlane | None, streams: Streams):
        self.cm = cm
        self.streams = streams  # the run's random streams (guest freeze times, torn captures)
        # every VM's freeze-time stream is made with the first one asked for (kernel/rng.py: together)
        streams.expect(("vm", v.name, FREEZE_STREAM) for v in cm.vms)
        self.generation = generation
        self.cfg = cfg
        self.plane = plane
        self.chains: dict[str, np.ndarray] = {}  # vm -> its restored image after the last backup
        self.tracker = ChangeTracker(cm, generation, cfg)
        # a mixed-version cluster: each VM's mechanism by its host, level and configuration (backup/mixed.py)
        self.mixed = MixedBackup(self) if cm.mixed_versions else None
        # guest clusters on shared disks (backup/guest.py)
        self.guest = GuestClusters(self) if any(v.guest_cluster for v in cm.vms) else None
        self.server: BackupServer | None = None
        self.jobs: list[BackupJob] = []
        self.policy = make_policy(cfg)  # backup/policy.py: the job's decisions (built in, or the scenario's)
        if tracking_kind(generation, True, cfg) == "filter":  # a vendor's filter driver on every host
            cm.io.write_overhead = cfg.change_tracking_write_overhead
        first = cfg.schedule[0].mode if cfg.schedule else cfg.mode
        if first == "incremental":
            # a schedule that starts with an incremental assumes a previous backup
            # `incremental_interval_s` before t=0: the data plane writes that much history, and each
            # tracked VM's reference point is that backup
            for v in cm.vms:
                if plane is not None:
                    self.chains[v.name] = plane.pre_age(v.name, cfg.incremental_interval_s)
                self.tracker.previous_backup(v.name, -cfg.incremental_interval_s)

    def run_schedule(self, all_done: Any, new_job: Callable[..., BackupJob], body: Callable[[BackupJob], Proc]) -> Proc:
        """The jobs of the schedule (a full, then incrementals; or one job), then the cluster settles
        (failure detection, failover boots, migrations under way) so that the summary counts what the
        backup set in motion. `new_job(mode=, start_s=, index=)` makes a job; `body(job)` is the
        generation's work (backup/registry.py body_of)."""
        cm, cfg = self.cm, self.cfg
        plan = [(r.at_s, r.mode) for r in cfg.schedule] if cfg.schedule else [(cfg.start_s, cfg.mode)]
        if self.mixed is not None:
            body = self.mixed.wrap(body)
        self.server = BackupServer(cm, body)
        for i, (at_s, mode) in enumerate(plan):
            job = new_job(mode=mode, start_s=at_s, index=i)
            if self.mixed is not None:
                self.mixed.plan_job(job)
            if self.guest is not None:
                self.guest.plan_job(job)
            self.jobs.append(job)
            job.spawn(job.run(body))
            yield job.quiesced
            job.verify()
            job.close()
        step = cm.heartbeat_interval_s
        while cm.busy():
            yield cm.env.timeout(step)
        all_done.succeed()
