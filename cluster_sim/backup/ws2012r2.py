"""ws2012r2: the guest snapshot becomes an AVHDX checkpoint at that instant (Hyper-V's own
VSS provider inside the guest); then a host VSS hardware snapshot, one per
`vms_per_snapshot` VMs (800 VMs, batch 1 -> 800 storage snapshots [seeds]); then the
AutoRecovery VHDX is hot-added over the VM's SCSI controller and fixed up inside the guest
(no SCSI controller: the VM fails with Event 10103 [seeds]); copy; merge the AVHDX. The node
taking the snapshot must coordinate with the CSV owner [seeds]. VMs without the backup
service, and Linux guests, are backed up online, crash-consistent [seeds].

Per batch of `vms_per_snapshot` VMs of one CSV on one node (backup/phases.py says what each does):
"""

from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.ledger import Proc
from cluster_sim.backup.phases import (
    commit_snapshot,
    coordinate_with_owner,
    copy_each_vm,
    enumerate_writers,
    prepare_vms,
    release_vss_lock,
    run_pipeline,
    scsi_fixup,
    surface_snapshot,
    take_vss_lock,
    thaw_and_resume,
)

PHASES = (
    take_vss_lock(),  # one set creation per node at a time
    enumerate_writers(),  # KB4014317: every node's writer enumerates its VMs
    prepare_vms(avhdx_checkpoint=True, refuse_autorecovery_leftover=True),  # freeze -> AVHDX checkpoint
    coordinate_with_owner(),  # when this node does not own the CSV
    commit_snapshot(metadata_redirect=True, detects_hold_overrun=True, capture_here=False),
    thaw_and_resume(),
    surface_snapshot(),  # the snapshot LUN on this host
    scsi_fixup(),  # AutoRecovery.vhdx hot-added over SCSI, fixed up in the guest
    release_vss_lock(),
    copy_each_vm(),  # copy, then merge the AVHDX; the snapshot is deleted (phases.clean_up)
)


def body(job: BackupJob) -> Proc:
    yield from run_pipeline(job, PHASES)
