"""Change tracking: which blocks an incremental copies, and why a VM's copy is a full.

Two mechanisms, by generation [seeds, V, MS]:
- `rct` (ws2016, VHDX disks and configuration version above 5.0): Resilient Change Tracking lives
  with the VHDX (.rct/.mrt files) and follows the VM wherever it runs. After a host crash the
  fine-grained .rct may be stale, but the coarser modified-region table still says which regions
  changed: the next incremental copies whole regions of `rct_region_blocks` blocks (more bytes,
  no full) [MS]. With `rct_survives_crash: false` a crash loses it (the next copy is a full).
- `filter` (ws2008r2, ws2012, ws2012r2 with `change_tracking: vendor_filter`): a backup vendor's
  file-system filter driver on each host keeps the map of changed blocks in the host's memory; it
  is lost when the host crashes or the VM moves to another host (live migration, failover), and
  that VM's next backup is a full [V].
- `none`: `.vhd` disks or configuration version 5.0 on ws2016 (no RCT [seeds]), or
  `change_tracking: none` before 2016: every backup is a full.

A reference point is taken at each VM's capture point and becomes the VM's reference only when
its backup succeeds (a failed attempt must not move it). The tracker needs no data plane: with
one, the blocks come from it; without, the bytes from the analytic change model
(cluster/writes.py) over the time since the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cluster_sim.cluster.model import ClusterModel
    from cluster_sim.scenario import Backup

# status of a VM's map
NO_REFERENCE = "no_previous_backup"  # nothing to be incremental to
TRACKED = "tracked"
REGIONS = "regions"  # RCT after a host crash: the modified-region table only
LOST_CRASH = "lost_host_crash"
LOST_MOVED = "lost_vm_moved"
SWITCHED = "switched"  # mixed-version clusters: the VM's tracking changed kind (backup/mixed.py)

# why a copy in an incremental job is a full (vms.csv `copy_reason`)
FULL_REASONS = {
    NO_REFERENCE: "no_previous_backup",
    LOST_CRASH: "change_tracking_lost_host_crash",
    LOST_MOVED: "change_tracking_lost_vm_moved",
}


@dataclass(frozen=True)
class CopyPlan:
    kind: str  # full | incremental | incremental_regions
    reason: str = ""  # why a copy of an incremental job is not a plain incremental
    ref_version: int = 0  # data plane: blocks newer than this changed
    since_s: float = 0.0  # analytic: time of the reference point


def tracking_kind(generation: str, has_rct: bool, cfg: Backup) -> str:
    if generation == "ws2016":
        return "rct" if has_rct else "none"
    return "filter" if cfg.change_tracking == "vendor_filter" else "none"


class ChangeTracker:
    """Per generation run (shared by the jobs of a schedule): each VM's reference point."""

    def __init__(self, cm: ClusterModel, generation: str, cfg: Backup):
        self.cfg = cfg
        self.generation = generation
        self.kind = {v.name: tracking_kind(generation, v.has_rct, cfg) for v in cm.vms}
        self.status = dict.fromkeys(self.kind, NO_REFERENCE)
        self.ref_version = dict.fromkeys(self.kind, 0)
        self.ref_s = dict.fromkeys(self.kind, 0.0)
        self.lost = {"host_crash": 0, "vm_moved": 0}  # maps lost (trace and summary)
        self.event_s: dict[str, float] = {}  # when each VM's map was last lost or coarsened
        self.event_status: dict[str, str] = {}  # ... and what it became
        self.switched: dict[str, str] = {}  # why a VM's tracking changed kind (its next copy is a full)
        self.trace = cm.trace
        self.now = lambda: cm.env.now
        cm.on_vm_moved.connect(self._moved)
        cm.on_host_crashed.connect(self._crashed)

    # -- what happens to the maps ----------------------------------------------------------------
    def previous_backup(self, vm: str, at_s: float) -> None:
        """A (virtual) previous backup took its reference point at `at_s` (version 0)."""
        if self.kind[vm] != "none":
            self.status[vm] = TRACKED
            self.ref_version[vm] = 0
            self.ref_s[vm] = at_s

    def switch(self, vm: str, kind: str, reason: str) -> None:
        """Mixed-version clusters (backup/mixed.py): the VM is now backed up with another kind of change
        tracking (a vendor filter's map before RCT, or RCT on a node that cannot use it). A map of the
        old kind is no reference for the new one: its next copy is a full, for `reason`."""
        if self.kind[vm] == kind:
            return
        had = self.status[vm] != NO_REFERENCE
        self.kind[vm] = kind
        if kind != "none" and had:
            self.status[vm] = SWITCHED
            self.switched[vm] = reason
            self.trace("change_tracking_switched", vm=vm, to=kind, why=reason)
        elif kind == "none":
            self.status[vm] = NO_REFERENCE

    def _moved(self, vm: str, src: str, dst: str) -> None:
        if self.kind.get(vm) == "filter" and src != dst:
            self._event(vm, LOST_MOVED, "vm_moved", node=src, to=dst)

    def _crashed(self, vm: str, node: str) -> None:
        kind = self.kind.get(vm)
        if kind == "filter" or (kind == "rct" and not self.cfg.rct_survives_crash):
            self._event(vm, LOST_CRASH, "host_crash", node=node)
        elif kind == "rct":
            self._event(vm, REGIONS, "", node=node)

    def _event(self, vm: str, status: str, why: str, **ids: str) -> None:
        """The VM's map is lost (or, RCT, coarsened) now. It applies to the current reference,
        and to a capture under way: remembered for its commit."""
        self.event_s[vm] = self.now()
        self.event_status[vm] = status
        if self.status[vm] in (TRACKED, REGIONS):
            self.status[vm] = status
            self._count(vm, status, why, **ids)

    def _count(self, vm: str, status: str, why: str, **ids: str) -> None:
        if status != REGIONS:
            self.lost[why] += 1
            self.trace("change_tracking_lost", vm=vm, why=why, **ids)

    # -- backups ---------------------------------------------------------------------------------
    def plan(self, vm: str, mode: str) -> CopyPlan:
        """What the copy of a VM captured now reads (decided at its capture point)."""
        if mode == "full":
            return CopyPlan("full")
        kind, st = self.kind[vm], self.status[vm]
        if kind == "none":
            return CopyPlan("full", "no_rct_vhd_or_config_5" if self.generation == "ws2016" else "change_tracking_off")
        if st == TRACKED:
            return CopyPlan("incremental", "", self.ref_version[vm], self.ref_s[vm])
        if st == REGIONS:
            return CopyPlan("incremental_regions", "rct_region_table_after_host_crash",
                            self.ref_version[vm], self.ref_s[vm])
        if st == SWITCHED:
            return CopyPlan("full", self.switched[vm])
        reason = FULL_REASONS[st]
        if kind == "rct" and st == LOST_CRASH:
            reason = "rct_lost_host_crash"
        return CopyPlan("full", reason)

    def commit(self, vm: str, version: int, at_s: float) -> None:
        """The VM's backup succeeded: its capture point is the new reference. A map lost (or
        coarsened) after that capture point stays lost: the changes made between the capture and
        the loss were tracked only by the map that is gone."""
        if self.kind[vm] == "none":
            return
        self.ref_version[vm] = version
        self.ref_s[vm] = at_s
        if self.event_s.get(vm, -math.inf) <= at_s:
            self.status[vm] = TRACKED
            return
        status = self.event_status[vm]
        if self.status[vm] == NO_REFERENCE:  # the map this capture started is gone already
            self._count(vm, status, "vm_moved" if status == LOST_MOVED else "host_crash")
        self.status[vm] = status


def regions(blocks: np.ndarray, region_blocks: int, n: int) -> np.ndarray:
    """Every block of each region of `region_blocks` blocks that holds a changed block."""
    if region_blocks <= 1 or not len(blocks):
        return blocks
    starts = np.unique(blocks // region_blocks) * region_blocks
    out = (starts[:, None] + np.arange(region_blocks)[None, :]).ravel()
    return out[out < n]
