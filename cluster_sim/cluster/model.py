"""The cluster control plane on the driver: one object the backup layer talks to.

It owns the fluid network, the CSVs, the storage array, the VM I/O model, the node gateway and
the cluster service's view of membership. The cluster service polls every node every
`cluster.node_poll_interval_s` (a batched heartbeat call); a node that does not answer (its
actor died) is declared failed at that instant. Crashes the simulation itself causes are
detected after `heartbeat_threshold x heartbeat_interval_s`, as the cluster service would [MS].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import simpy

from cluster_sim.cluster.csv import CsvTable
from cluster_sim.cluster.io import IoModel
from cluster_sim.cluster.nodes import NodeDown, NodeGateway
from cluster_sim.cluster.storage import StorageArray
from cluster_sim.cluster.topology import (
    VmSpec,
    csv_name,
    initial_coordinator,
    link_capacities,
    node_name,
)
from cluster_sim.kernel.fluid import FluidNetwork
from cluster_sim.kernel.instant import InstantHooks
from cluster_sim.kernel.rng import Streams
from cluster_sim.kernel.trace import Trace
from cluster_sim.scenario import Scenario


@dataclass
class NodeFailure:
    node: str
    detected_s: float
    how: str  # "actor_died" (found by polling) | "crash" (scheduled)
    vms_down: int


class ClusterModel:
    def __init__(self, sc: Scenario, vms: list[VmSpec], backend, streams: Streams):  # type: ignore[no-untyped-def]
        self.sc = sc
        self.env = simpy.Environment()
        self.hooks = InstantHooks(self.env)
        self.trace = Trace(self.env)
        self.streams = streams
        self.vms = vms
        self.spec = {v.name: v for v in vms}
        self.nodes = [node_name(i) for i in range(sc.cluster.nodes)]
        self.net = FluidNetwork(self.env, link_capacities(sc), self.hooks)
        coords = {csv_name(i): initial_coordinator(i, sc.cluster.nodes) for i in range(sc.storage.csvs)}
        self.csvs = CsvTable(self.env, coords, self.trace)
        self.array = StorageArray(self.env, sc.storage.array, list(coords), self.trace)
        self.io = IoModel(sc, self.net, self.csvs, vms)
        self.array.on_protection_change = self.io.set_protected
        self.gateway = NodeGateway(self.env, self.hooks, backend)
        self.gateway.on_down = self._found_down
        self.host: dict[str, str] = {v.name: v.node for v in vms}  # cluster configuration: VM -> owner node
        self.up: set[str] = set(self.nodes)
        self.failures: list[NodeFailure] = []
        self.failure_listeners: list[Callable[[str], None]] = []
        self.polls = 0

    # -- set-up ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.trace("cluster_start", nodes=len(self.nodes), csvs=len(self.csvs.volumes), vms=len(self.vms))
        per_node: dict[str, list[tuple[str, str]]] = {n: [] for n in self.nodes}
        for v in self.vms:
            per_node[v.node].append((v.name, "running" if v.running else "off"))
        for n in self.nodes:
            self.gateway.cast(n, "reset")
            self.gateway.cast(n, "host", per_node[n])
        for v in self.vms:
            if v.running:
                self.io.start_vm(v.name, v.node)
        self.env.process(self._poll())

    def _poll(self):  # type: ignore[no-untyped-def]
        """Liveness: collect every answer due (a dead actor shows up as NodeDown), then send
        each live node a heartbeat, whose answer the next poll collects."""
        interval = self.sc.cluster.node_poll_interval_s
        while True:
            self.gateway.harvest()
            for n in sorted(self.up):
                self.gateway.cast(n, "heartbeat")
            self.polls += 1
            yield self.env.timeout(interval)

    # -- failures --------------------------------------------------------------------------------
    def _found_down(self, node: str) -> None:
        """The gateway found a node not answering (its actor is gone)."""
        if node in self.up:
            self.node_failed(node, how="actor_died")

    def node_failed(self, node: str, how: str) -> None:
        self.up.discard(node)
        hosted = [vm for vm, h in sorted(self.host.items()) if h == node]
        for vm in hosted:
            self.io.stop_vm(vm)
        self.failures.append(NodeFailure(node, self.env.now, how, len(hosted)))
        self.trace("node_failed", node=node, how=how, vms_down=len(hosted))
        for fn in self.failure_listeners:
            fn(node)

    def vms_on(self, node: str) -> list[str]:
        return [vm for vm, h in self.host.items() if h == node]

    # -- wrap-up ---------------------------------------------------------------------------------
    def collect_node_state(self) -> dict[str, dict[str, dict]]:  # type: ignore[type-arg]
        """Ask every live node for its volatile state (run after the simulation has stopped)."""
        out: dict[str, dict[str, dict]] = {}  # type: ignore[type-arg]
        asked = {n: self.gateway.submit(n, "snapshot") for n in sorted(self.up)}
        self.gateway.flush()
        self.gateway.harvest()
        for n, h in asked.items():
            try:
                out[n] = h.get()
            except NodeDown:
                pass
        return out

    def finish(self) -> None:
        self.io.finish()
        self.csvs.finish()
