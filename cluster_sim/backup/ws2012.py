"""ws2012: as ws2008r2, but CSV 2.0 keeps direct I/O during the backup; only the snapshot
creation (a metadata operation) is briefly redirected to the coordinator [MS]. Host
auto-recovery still mounts, reverts and dismounts every VHD on the host [MS, seeds], and a
hold-writes overrun is now detected (VSS_E_HOLD_WRITES_TIMEOUT). A failover during a CSV snapshot
leaks it (KB2878635) [MS].

Per batch of `vms_per_snapshot` VMs of one CSV on one node (backup/phases.py says what each does):
"""

from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.ledger import Proc
from cluster_sim.backup.phases import (
    commit_snapshot,
    coordinate_with_owner,
    copy_each_vm,
    enumerate_writers,
    host_auto_recovery,
    prepare_vms,
    release_vss_lock,
    run_pipeline,
    surface_snapshot,
    take_vss_lock,
    thaw_and_resume,
)

PHASES = (
    take_vss_lock(),  # one set creation per node at a time
    enumerate_writers(),  # KB4014317: every node's writer enumerates its VMs
    prepare_vms(),  # guest VSS freeze, or saved state
    coordinate_with_owner(),  # when this node does not own the CSV
    commit_snapshot(metadata_redirect=True, detects_hold_overrun=True, capture_here=True,
                    leak_on_failover=True),  # the CSV redirected for the metadata operation only
    thaw_and_resume(),
    surface_snapshot(),  # the snapshot LUN on this host
    host_auto_recovery(),  # mount, revert, dismount every VHD on the host
    release_vss_lock(),
    copy_each_vm(),  # then the snapshot is deleted (phases.clean_up)
)


def body(job: BackupJob) -> Proc:
    yield from run_pipeline(job, PHASES)
