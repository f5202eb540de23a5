"""Placement: node and CSV names, each VM's specification and where the fleet starts (which
node runs it, which CSV holds its disks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster_sim.kernel.kept import Kept

if TYPE_CHECKING:
    from cluster_sim.scenario.model import Scenario, Template

MIB_PER_GIB = 1024.0
PLACEMENTS_KEPT = 8  # [P] fleets placed that are kept for the next ask (a run's generations, a study's runs)


def node_name(i: int) -> str:
    return f"node-{i + 1}"


def csv_name(i: int) -> str:
    return f"csv-{i + 1}"


def initial_coordinator(csv_index: int, nodes: int) -> str:
    """csv-i is first coordinated by node-((i-1) % nodes + 1)."""
    return node_name(csv_index % nodes)


@dataclass(frozen=True, slots=True)
class DiskSpec:
    index: int
    size_mib: float
    used_mib: float
    format: str


@dataclass(frozen=True, slots=True)
class VmSpec:
    name: str
    template: str
    index: int  # position in the fleet, 0-based
    node: str  # initial host
    csv: str  # the CSV holding its disks
    guest_os: str
    memory_mib: float
    disks: tuple[DiskSpec, ...]
    scsi_controller: bool
    integration_services: bool
    integration_services_backup: bool
    dynamic_disks: bool
    filesystem: str
    config_version: str
    running: bool
    read_mib_s: float
    write_mib_s: float
    read_iops: float
    write_iops: float
    dirty_mib_s: float
    working_set_fraction: float
    daily_change_fraction: float = 0.05
    write_skew_zipf_s: float = 1.0
    guest_cluster: str = ""  # the guest cluster it is a member of ("" if none)
    shared_disks: tuple[DiskSpec, ...] = ()  # disks shared with the other members (not in `disks`)

    @property
    def used_mib(self) -> float:
        return sum(d.used_mib for d in self.disks)

    @property
    def has_rct(self) -> bool:
        """RCT needs VHDX/VHDS disks and a configuration version above 5.0 [seeds]."""
        return self.config_version != "5.0" and all(d.format != "vhd" for d in self.disks)


def _vm(t: Template, k: int, index: int, node: str, csv: str) -> VmSpec:
    w = t.workload
    return VmSpec(
        name=f"{t.template}-{k + 1:04d}",
        template=t.template,
        index=index,
        node=node,
        csv=csv,
        guest_os=t.guest_os,
        memory_mib=t.memory_gib * MIB_PER_GIB,
        disks=tuple(
            DiskSpec(i, d.size_gib * MIB_PER_GIB, d.size_gib * MIB_PER_GIB * d.used_fraction, d.format)
            for i, d in enumerate(t.disks)
        ),
        scsi_controller=t.scsi_controller,
        integration_services=t.integration_services,
        integration_services_backup=t.integration_services_backup,
        dynamic_disks=t.dynamic_disks,
        filesystem=t.filesystem,
        config_version=t.config_version,
        running=t.running,
        read_mib_s=w.read_iops * w.io_size_kib / 1024.0,
        write_mib_s=w.write_iops * w.io_size_kib / 1024.0,
        read_iops=w.read_iops,
        write_iops=w.write_iops,
        dirty_mib_s=w.dirty_mib_s,
        working_set_fraction=w.working_set_fraction,
        daily_change_fraction=w.daily_change_fraction,
        write_skew_zipf_s=w.write_skew_zipf_s,
        **_guest(t, k),
    )


def _guest(t: Template, k: int) -> dict[str, Any]:
    """A guest cluster member's name of its cluster and its shared disks (nothing for other VMs)."""
    gc = t.guest_cluster
    if gc is None:
        return {}
    return {"guest_cluster": f"{t.template}-gc-{k // gc.size + 1:02d}",
            "shared_disks": tuple(DiskSpec(i, d.size_gib * MIB_PER_GIB, d.size_gib * MIB_PER_GIB * d.used_fraction,
                                           d.format) for i, d in enumerate(gc.shared_disks))}


def _ws2016_nodes(sc: Scenario) -> list[int] | None:
    """Indexes of the ws2016 nodes of a mixed-version cluster (None: one version everywhere)."""
    given = sc.cluster.node_versions
    if given is None:
        return None
    return sorted(int(name.split("-")[1]) - 1 for name in given.get("ws2016", []))


# Placements made, by what they are made from (`_placement_key`): a scenario's fleet is placed when it
# is validated and again by each generation; the VMs' specifications are frozen, so one placement
# serves them all (a generation of 8000vm-64node placed its 8,000 VMs in about 0.2 s; the pool's
# workers, forked after the scenario was validated, find it here).
_PLACED: Kept[tuple[VmSpec, ...]] = Kept(PLACEMENTS_KEPT)


def _placement_key(sc: Scenario) -> str:
    """Everything `place_fleet` reads from the scenario."""
    return json.dumps([sc.cluster.nodes, sc.storage.csvs, sc.placement, sc.cluster.node_versions,
                       [t.model_dump(mode="json") for t in sc.fleet]], sort_keys=True)


def place_fleet(sc: Scenario) -> list[VmSpec]:
    """VMs over nodes round-robin in fleet order (a new list; the same placement again is the one
    kept, see _PLACED)."""
    key = _placement_key(sc)
    placed = _PLACED.get(key)
    if placed is None:
        placed = _PLACED.put(key, tuple(_place_fleet(sc)))
    return list(placed)


def _place_fleet(sc: Scenario) -> list[VmSpec]:
    """VMs over nodes round-robin in fleet order.

    round_robin: a VM's disks go on a CSV its node coordinates (round-robin among them).
    spread: a VM's disks go on CSVs round-robin independently of its node, so most VMs run on
    a node that does not coordinate their CSV (the common layout of a real cluster).
    """
    n, c = sc.cluster.nodes, sc.storage.csvs
    owned: dict[int, list[int]] = {k: [i for i in range(c) if i % n == k] for k in range(n)}
    per_node_count = [0] * n
    out: list[VmSpec] = []
    index = 0
    new_nodes = _ws2016_nodes(sc)
    new_seq = 0
    for t in sc.fleet:
        for k in range(t.count):
            node_i = index % n
            if new_nodes is not None and t.config_version != "5.0" and node_i not in new_nodes:
                # a mixed-version cluster: a VM above configuration 5.0 runs on 2016 nodes only [MS],
                # round-robin over them
                node_i = new_nodes[new_seq % len(new_nodes)]
                new_seq += 1
            if sc.placement == "round_robin":
                mine = owned[node_i]
                csv_i = mine[per_node_count[node_i] % len(mine)] if mine else index % c
            else:
                csv_i = (index // n + index) % c
            per_node_count[node_i] += 1
            out.append(_vm(t, k, index, node_name(node_i), csv_name(csv_i)))
            index += 1
    return out
