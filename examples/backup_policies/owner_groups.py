"""Group VMs by the node that owns their CSV, to avoid owner coordination.

A node that takes a storage snapshot of a CSV it does not coordinate must first coordinate with the
CSV's owner (`csv_owner_coordination_s` per set [seeds]) and its metadata operation is redirected
through that owner. This policy:

- ws2016: makes one snapshot set per owner node (the VMs whose CSVs that node coordinates), taken
  on that owner, instead of one set over every CSV taken on the first node; a set whose owner is
  down or has lost its storage path goes where the built-in policy would take it;
- ws2008r2/ws2012/ws2012r2 (each node backs up its own VMs): a node works first on the CSVs it
  owns, then on the others, `vms_per_snapshot` at a time as usual.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cluster_sim.backup.policy import ClusterView, Policy


class GroupByCsvOwnerArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_luns_per_set: int = Field(64, ge=1, le=64)  # [MS] at most 64 volumes per shadow-copy set


class GroupByCsvOwner(Policy):
    Args = GroupByCsvOwnerArgs

    def snapshot_sets(self, view: ClusterView, vms: list[str]) -> list[list[str]]:
        by_owner: dict[str, list[str]] = {}
        for vm in vms:
            by_owner.setdefault(view.csv_owner(view.csv_of(vm)), []).append(vm)
        sets = []
        for owner in sorted(by_owner):
            members = by_owner[owner]
            csvs = sorted({view.csv_of(vm) for vm in members})
            k = self.args.max_luns_per_set
            for i in range(0, len(csvs), k):
                chunk = set(csvs[i : i + k])
                sets.append([vm for vm in members if view.csv_of(vm) in chunk])
        return sets

    def set_node(self, view: ClusterView, csvs: list[str]) -> str:
        owners = {view.csv_owner(c) for c in csvs}
        if len(owners) == 1:
            owner = owners.pop()
            if view.node_is_up(owner) and view.node_has_storage_path(owner):
                return owner
        return super().set_node(view, csvs)

    def snapshot_groups(self, view: ClusterView, node: str, vms: list[str]) -> list[list[str]]:
        groups = super().snapshot_groups(view, node, vms)
        # owned CSVs first (stable: otherwise in the built-in order)
        return sorted(groups, key=lambda g: view.csv_owner(view.csv_of(g[0])) != node)
