"""ws2008r2: guest VSS, host VSS snapshot with the CSV pinned in redirected access, host
auto-recovery (mount, revert, dismount every VHD), copy, release [MS, seeds].

The CSV is pinned to the backup node with direct I/O off from preparation until that VM's
backup ends [MS]. A provider commit that overruns the hold-writes limit is not detected: the
capture is claimed consistent but is silently torn [MS]. VMs that cannot be backed up online
(no backup integration service, dynamic disks, non-NTFS, Linux) are put in saved state.
"""

from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.ledger import Proc
from cluster_sim.backup.vss_batch import Flavor, run_pipeline

FLAVOR = Flavor(
    pins_csv=True,
    metadata_redirect=False,
    detects_hold_overrun=False,
    host_mounts=True,
    scsi_fixup=False,
    checkpoints=False,
    coordinate_owner=False,  # the pin makes the backup node the coordinator
)


def body(job: BackupJob) -> Proc:
    yield from run_pipeline(job, FLAVOR)
