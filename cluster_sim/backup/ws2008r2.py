"""ws2008r2: guest VSS, host VSS snapshot with the CSV pinned in redirected access, host
auto-recovery (mount, revert, dismount every VHD), copy, release [MS, seeds].

The CSV is pinned to the backup node with direct I/O off from preparation until that VM's
backup ends [MS]. A provider commit that overruns the hold-writes limit is not detected: the
capture is claimed consistent but is silently torn [MS]. VMs that cannot be backed up online
(no backup integration service, dynamic disks, non-NTFS, Linux) are put in saved state.

Per batch of `vms_per_snapshot` VMs of one CSV on one node (backup/phases.py says what each does):
"""

from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.ledger import Proc
from cluster_sim.backup.phases import (
    commit_snapshot,
    copy_each_vm,
    enumerate_writers,
    host_auto_recovery,
    pin_csv,
    prepare_vms,
    release_vss_lock,
    run_pipeline,
    surface_snapshot,
    take_vss_lock,
    thaw_and_resume,
)

PHASES = (
    pin_csv(),  # the CSV moves to this node, redirected, until the batch ends
    take_vss_lock(),  # one set creation per node at a time
    enumerate_writers(),  # KB4014317: every node's writer enumerates its VMs
    prepare_vms(),  # guest VSS freeze, or saved state
    commit_snapshot(metadata_redirect=False, detects_hold_overrun=False, capture_here=True),
    thaw_and_resume(),
    surface_snapshot(),  # the snapshot LUN on this host
    host_auto_recovery(),  # mount, revert, dismount every VHD on the host
    release_vss_lock(),
    copy_each_vm(),  # then the snapshot is deleted and the pin released (phases.clean_up)
)


def body(job: BackupJob) -> Proc:
    yield from run_pipeline(job, PHASES)
