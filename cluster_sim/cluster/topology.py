"""The links of the fluid model: the array's read and write sides, the backup target, and each
node's storage fabric, cluster NIC and live-migration NIC."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from cluster_sim.scenario.placement import node_name

if TYPE_CHECKING:
    from cluster_sim.scenario import Scenario

ARRAY_READ = "array:read"
ARRAY_WRITE = "array:write"
BACKUP_TARGET = "backup:target"


def fabric(node: str) -> str:
    return f"fabric:{node}"


def cluster_nic(node: str) -> str:
    return f"cluster:{node}"


def lm_nic(node: str, shared: bool) -> str:
    return cluster_nic(node) if shared else f"lm:{node}"


def link_capacities(sc: Scenario) -> dict[str, float]:
    net = sc.cluster.networks
    arr = sc.storage.array
    caps = {ARRAY_READ: arr.read_mib_s, ARRAY_WRITE: arr.write_mib_s, BACKUP_TARGET: net.backup_target_mib_s}
    for i in range(sc.cluster.nodes):
        nd = node_name(i)
        caps[fabric(nd)] = net.storage_fabric_mib_s_per_node
        caps[cluster_nic(nd)] = net.cluster_mib_s
        if not net.shared_cluster_and_lm:
            caps[lm_nic(nd, False)] = net.live_migration_mib_s
    return caps


def lower_bound_s(sc: Scenario, mib: float) -> float:
    """Bytes to copy over the bottleneck bandwidth of the copy path."""
    if mib <= 0:
        return 0.0
    n = sc.cluster.nodes
    b = sc.backup
    streams = n * (b.concurrent_vms_per_node if b else 1) * (b.copy_stream_mib_s if b else math.inf)
    bw = min(
        sc.cluster.networks.backup_target_mib_s,
        sc.storage.array.read_mib_s,
        n * sc.cluster.networks.storage_fabric_mib_s_per_node,
        streams,
    )
    return mib / bw
