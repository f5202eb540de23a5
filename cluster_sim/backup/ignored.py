"""Backup settings a generation never reads, and the effective scenario of one generation's run.

A study's grid point that differs from another only in settings its generation never reads (ws2016
and `backup.vms_per_snapshot`: its one snapshot set covers every LUN, there are no batches) gives
the same bytes: the study runs one of them and copies its numbers to the others.

Each set below names the code path that reads its fields and the generations that take it; a
setting missing here is simply treated as relevant (a run too many, never a wrong number).
tests/test_effective_scenario.py runs every generation with a scenario whose `backup` section
records every field read, on the shipped scenarios and on generated ones, and fails if a generation
reads a field listed here as ignored by it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cluster_sim.scenario import Scenario

# ws2016.py: the one snapshot set over every LUN, and which node takes it
_WS2016_SET = frozenset({"max_luns_per_set", "ws2016_set_node"})
# tracking.py, capture.py: RCT (ws2016) and its modified-region table after a crash
_RCT = frozenset({"rct_survives_crash", "rct_region_blocks"})
# tracking.py, simulation.py: a vendor's change-tracking filter driver (before 2016)
_FILTER = frozenset({"change_tracking", "change_tracking_write_overhead"})
# phases.py: batches of VMs per storage snapshot and saved-state VMs (the pipeline of 2008 R2-2012 R2)
_BATCH_PIPELINE = frozenset({"vms_per_snapshot", "saved_state_downtime_s"})
# phases.py pin_csv (ws2008r2): the CSV pinned in redirected access, left marked by a dead backup
_CSV_PIN = frozenset({"stale_backup_hold_s", "clear_stale_redirect"})
# phases.py host_auto_recovery (ws2008r2, ws2012): host auto-recovery mounts
_HOST_MOUNTS = frozenset({"auto_recovery", "host_mount_base_s", "host_mount_exponent"})
# phases.py scsi_fixup (ws2012r2): the AutoRecovery disk hot-added over SCSI
_SCSI_FIXUP = frozenset({"scsi_fixup_s"})
# phases.py prepare_vms(avhdx_checkpoint) (ws2012r2), ws2016.py: AVHDX checkpoints and their merge
_CHECKPOINTS = frozenset({"checkpoint_create_s", "merge_mib_s"})
# phases.py commit_snapshot(metadata_redirect), coordinate_with_owner (ws2012, ws2012r2), ws2016.py
_CSV_METADATA = frozenset({"csv_metadata_redirect_s", "csv_owner_coordination_s"})
# snapshots.py writer_enumeration(per_vm=True): ws2016's RCT-based set pays the base only
_WRITER_PER_VM = frozenset({"writer_enumeration_per_vm_s", "writer_enumeration_per_vhd_s",
                            "writer_enumeration_per_checkpoint_s"})

IGNORED_BACKUP_FIELDS: dict[str, frozenset[str]] = {
    "ws2008r2": _WS2016_SET | _RCT | _SCSI_FIXUP | _CHECKPOINTS | _CSV_METADATA,
    "ws2012": _WS2016_SET | _RCT | _SCSI_FIXUP | _CHECKPOINTS | _CSV_PIN,
    "ws2012r2": _WS2016_SET | _RCT | _HOST_MOUNTS | _CSV_PIN,
    "ws2016": _FILTER | _BATCH_PIPELINE | _CSV_PIN | _HOST_MOUNTS | _SCSI_FIXUP | _WRITER_PER_VM,
}

# How a run is carried out, never what it computes: results are the same bytes whatever these say
# (tests/test_backends.py, tests/test_parallel_generations.py).
MACHINERY_RUN_FIELDS = frozenset({"backend", "ray_num_cpus", "ray_address", "workers", "parallel_min_vms",
                                  "ray_call_timeout_s", "ray_start_timeout_s"})


def ignored_fields(generation: str, sc: Scenario | None = None) -> frozenset[str]:
    """The backup fields a run of `generation` never reads. On a mixed-version cluster a ws2016 run
    also backs VMs up on the 2012 R2 path (backup/mixed.py): it ignores only what both ignore."""
    out = IGNORED_BACKUP_FIELDS.get(generation, frozenset())
    if sc is not None and sc.cluster.node_versions is not None and generation == "ws2016":
        out = out & IGNORED_BACKUP_FIELDS["ws2012r2"]
    return out


def ignored_paths(generation: str, sc: Scenario | None = None) -> set[str]:
    """Dotted scenario paths whose value cannot change a run of this generation (of this scenario)."""
    return ({f"backup.{f}" for f in ignored_fields(generation, sc)}
            | {f"run.{f}" for f in MACHINERY_RUN_FIELDS} | {"backup.generations"})


def effective_scenario(sc: Scenario, generation: str) -> dict[str, Any]:
    """The scenario as a run of `generation` sees it: what it never reads left out."""
    data = sc.model_dump(mode="json")
    if isinstance(data.get("backup"), dict):
        data["backup"]["generations"] = [generation]
        for name in ignored_fields(generation, sc):
            data["backup"].pop(name, None)
    for name in MACHINERY_RUN_FIELDS:
        data["run"].pop(name, None)
    return data


def effective_key(sc: Scenario, generation: str) -> str:
    """Equal for two scenarios whose runs of `generation` (with the same seed) give the same bytes."""
    text = json.dumps(effective_scenario(sc, generation), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
