"""ws2012: as ws2008r2, but CSV 2.0 keeps direct I/O during the backup; only the snapshot
creation (a metadata operation) is briefly redirected to the coordinator [MS]. Host
auto-recovery still mounts, reverts and dismounts every VHD on the host [MS, seeds], and a
hold-writes overrun is now detected (VSS_E_HOLD_WRITES_TIMEOUT).
"""

from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.ledger import Proc
from cluster_sim.backup.vss_batch import Flavor, run_pipeline

FLAVOR = Flavor(
    pins_csv=False,
    metadata_redirect=True,
    detects_hold_overrun=True,
    host_mounts=True,
    scsi_fixup=False,
    checkpoints=False,
    coordinate_owner=True,
    leaks_snapshot_on_failover=True,  # KB2878635 [MS]
)


def body(job: BackupJob) -> Proc:
    yield from run_pipeline(job, FLAVOR)
