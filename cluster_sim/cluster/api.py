"""The cluster's API: what components above the cluster (the backup, the data plane, the auditor)
may use of `ClusterModel`. `API` lists every name; tests/test_layers.py checks that `backup/`
reaches the cluster through these names only.

- components with their own API: `env` (simulated time), `trace`, `nodes`, `vms` (the fleet's
  specs), `net` (the fluid network: start and stop flows), `array` (the storage array), `csvs`
  (the CSVs: coordinators, redirected-access holds, pins), `io` (the VMs' I/O model: phases);
- queries, below;
- commands, below;
- signals (cluster/signals.py), connected to and disconnected from by subscribers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster_sim.cluster.csv import CsvTable
    from cluster_sim.cluster.faults import Faults
    from cluster_sim.cluster.io import IoModel
    from cluster_sim.cluster.migration import Migrations
    from cluster_sim.cluster.nodes import NodeGateway
    from cluster_sim.cluster.storage import StorageArray
    from cluster_sim.cluster.versions import Versions
    from cluster_sim.kernel.fluid import Flow, FluidNetwork
    from cluster_sim.kernel.instant import CountingEnvironment
    from cluster_sim.kernel.trace import Trace
    from cluster_sim.scenario import Scenario
    from cluster_sim.scenario.placement import VmSpec

COMPONENTS = ("env", "trace", "nodes", "vms", "net", "array", "csvs", "io")
QUERIES = ("host_of", "is_alive", "is_up", "incarnation_of", "is_booting", "is_unplaced", "is_migrating",
           "is_settled", "coordinator", "checkpoints_by_node", "node_inventory", "live_nodes", "runs_on", "on_host",
           "has_fabric", "has_quorum", "reachable", "csv_path", "coordinator_lost_fabric_since",
           "releases_by_itself", "target_reachable", "heartbeat_interval_s", "failure_detection_s", "block_size_mib", "busy",
           "mixed_versions", "node_version", "functional_level", "vm_config_version", "version_counts")
COMMANDS = ("node_op", "save_vm", "unsave_vm", "leave_behind", "release_later", "cluster_work", "pair")
SIGNALS = ("on_vm_lost", "on_host_crashed", "on_vm_restarted", "on_vm_moved", "on_vm_migrated",
           "on_node_failed", "on_migration_requested", "on_backup_server_crash", "on_csv_owner_changed")
API = frozenset(COMPONENTS + QUERIES + COMMANDS + SIGNALS)


class ClusterApi:
    """Mixed into ClusterModel (cluster/model.py), whose state these read and change."""

    sc: Scenario
    env: CountingEnvironment
    trace: Trace
    nodes: list[str]
    vms: list[VmSpec]
    net: FluidNetwork
    array: StorageArray
    csvs: CsvTable
    io: IoModel
    faults: Faults
    gateway: NodeGateway
    migrations: Migrations
    host: dict[str, str]
    _checkpoints_on: dict[str, int]
    up: set[str]
    alive: set[str]
    booting: set[str]
    unplaced: set[str]
    saved: set[str]
    incarnation: dict[str, int]
    versions: Versions

    # -- queries (the API components above the cluster use) ---------------------------------------
    def host_of(self, vm: str) -> str:
        """The node the cluster's configuration says owns the VM (it may be dead or booting it)."""
        return self.host[vm]

    def is_alive(self, node: str) -> bool:
        """Physically up (a crashed host is not alive at once, before the cluster notices)."""
        return node in self.alive

    def is_up(self, node: str) -> bool:
        """A member in the cluster service's view."""
        return node in self.up

    def live_nodes(self) -> list[str]:
        """The nodes both up in the cluster service's view and alive, in node order."""
        up, alive = self.up, self.alive
        return [n for n in self.nodes if n in up and n in alive]

    def incarnation_of(self, node: str) -> int:
        """Bumped each time the host dies: a restarted host is another incarnation."""
        return self.incarnation[node]

    def is_booting(self, vm: str) -> bool:
        return vm in self.booting

    def is_unplaced(self, vm: str) -> bool:
        return vm in self.unplaced

    def is_migrating(self, vm: str) -> bool:
        return vm in self.migrations.migrating

    def is_settled(self, vm: str) -> bool:
        """The VM can be worked on where the cluster says it is: host alive and up, not moving,
        not booting."""
        host = self.host[vm]
        return (host in self.alive and host in self.up and vm not in self.migrations.migrating
                and vm not in self.booting)

    def coordinator(self, csv: str) -> str:
        return self.csvs[csv].coordinator

    def checkpoints_by_node(self) -> dict[str, int]:
        """Live AVHDX checkpoints per node (of the VMs each node owns; nodes with none left out)."""
        return {n: k for n, k in self._checkpoints_on.items() if k}

    def on_host(self, vm: str, node: str, incarnation: int | None = None) -> bool:
        """Does `node` (still the same incarnation, if given) run this VM now?"""
        return (self.host.get(vm) == node and node in self.alive and vm not in self.booting
                and vm not in self.unplaced and (incarnation is None or self.incarnation[node] == incarnation))

    runs_on = on_host

    # -- commands --------------------------------------------------------------------------------
    def node_op(self, node: str, method: str, *args: Any) -> None:
        """Queue an operation for a node (its answer is not read; see nodes.py NodeGateway)."""
        self.gateway.cast(node, method, *args)

    def save_vm(self, vm: str) -> None:
        """The VM is in saved state (for a backup): it cannot move and does no I/O."""
        self.saved.add(vm)
        self.io.stop_vm(vm)

    def unsave_vm(self, vm: str, node: str | None) -> None:
        """Out of saved state; with `node`, it runs there again (its I/O resumes)."""
        self.saved.discard(vm)
        if node is not None:
            self.io.start_vm(vm, node)


    def has_fabric(self, node: str) -> bool:
        """Does the node reach the storage over its own fabric (no storage_path_loss now)?"""
        return node not in self.faults.no_fabric

    def has_quorum(self, node: str) -> bool:
        """False while the node is alive but on a side of a partition that lost quorum."""
        return node not in self.faults.quorum_lost

    def reachable(self, a: str, b: str) -> bool:
        """Do nodes a and b reach each other over the cluster network (no partition between)?"""
        return self.faults.reachable(a, b)

    def csv_path(self, node: str, csv: str) -> list[str]:
        """The links from a node to a CSV's LUN (redirected through the coordinator without fabric)."""
        return self.faults.csv_path(node, csv)

    def coordinator_lost_fabric_since(self, csv: str, t_s: float) -> bool:
        """Did the CSV's coordinator move away from a node that lost its storage path at or after t_s?"""
        return any(t >= t_s for t in self.faults.path_loss_moves.get(csv, ()))

    def releases_by_itself(self, hold_id: int) -> bool:
        """Will the cluster release this CSV hold by its own timeout?"""
        return hold_id in self.faults.timed_holds

    def target_reachable(self) -> bool:
        """Is the backup target reachable (no target_outage now)?"""
        return not self.faults.target_outages

    @property
    def heartbeat_interval_s(self) -> float:
        return self.sc.cluster.heartbeat_interval_s

    @property
    def failure_detection_s(self) -> float:
        """How long the cluster service takes to declare a silent node failed [MS]."""
        return self.sc.cluster.heartbeat_interval_s * self.sc.cluster.heartbeat_threshold

    @property
    def block_size_mib(self) -> float:
        return self.sc.storage.block_size_mib

    # -- mixed-version clusters (cluster/versions.py) ----------------------------------------------
    @property
    def mixed_versions(self) -> bool:
        """Does the scenario give each node its Windows version (`cluster.node_versions`)?"""
        return self.versions.active

    def node_version(self, node: str) -> str:
        """The node's Windows version now (ws2012r2 | ws2016; "" in a cluster of one version)."""
        return self.versions.node.get(node, "")

    def functional_level(self) -> str:
        return self.versions.level

    def vm_config_version(self, vm: str) -> str:
        """The VM's configuration version now (upgrade_vm_config raises it)."""
        return self.versions.config[vm]

    def version_counts(self) -> dict[str, int]:
        """Nodes per Windows version now, and those out of the cluster for their reinstall."""
        v = self.versions
        out = {ver: sum(1 for n in self.nodes if v.node.get(n) == ver and n not in v.upgrading)
               for ver in ("ws2012r2", "ws2016")}
        out["upgrading"] = len(v.upgrading)
        return out

    # -- commands for what a fault or a dead backup leaves behind ----------------------------------
    def leave_behind(self, cause: str, kind: str, item: Any, n: int = 1) -> None:
        """Record in the fault ledger what `cause` left behind (kind: cluster/faults.py LEAK_KINDS)."""
        self.faults.ledger.left(cause, kind, item, n)

    def release_later(self, vol: Any, hold: Any, at_s: float) -> None:
        """The cluster releases a CSV hold at `at_s` by its own timeout (the run waits for it)."""
        self.faults.release_later(vol, hold, at_s)

    def cluster_work(self, gen: Any) -> None:
        """Work the cluster or the array finishes by itself (the run waits for it)."""
        self.faults.cluster_work(gen)

    def pair(self, flow: Flow, a: str, b: str) -> None:
        """A flow between nodes a and b over the network (a partition between them ends it)."""
        self.faults.pair(flow, a, b)
