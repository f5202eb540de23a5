"""ws2012r2: the guest snapshot becomes an AVHDX checkpoint at that instant (Hyper-V's own
VSS provider inside the guest); then a host VSS hardware snapshot, one per
`vms_per_snapshot` VMs (800 VMs, batch 1 -> 800 storage snapshots [seeds]); then the
AutoRecovery VHDX is hot-added over the VM's SCSI controller and fixed up inside the guest
(no SCSI controller: the VM fails with Event 10103 [seeds]); copy; merge the AVHDX. The node
taking the snapshot must coordinate with the CSV owner [seeds]. VMs without the backup
service, and Linux guests, are backed up online, crash-consistent [seeds].
"""

from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.ledger import Proc
from cluster_sim.backup.vss_batch import Flavor, run_pipeline

FLAVOR = Flavor(
    pins_csv=False,
    metadata_redirect=True,
    detects_hold_overrun=True,
    host_mounts=False,
    scsi_fixup=True,
    checkpoints=True,
    coordinate_owner=True,
)


def body(job: BackupJob) -> Proc:
    yield from run_pipeline(job, FLAVOR)
