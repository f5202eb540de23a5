"""The cluster control plane on the driver: one object the backup layer talks to.

It owns the fluid network, the CSVs, the storage array, the VM I/O model, the node gateway and
the cluster service's view of membership. Components above it (the backup, the data plane) use
its API only: queries (`host_of`, `is_settled`, `runs_on`, ...), commands (`node_op`, `save_vm`,
...), its public components (`env`, `trace`, `net`, `array`, `csvs`, `io`, `faults`) and its
signals (`on_vm_lost`, `on_host_crashed`, `on_vm_restarted`, `on_vm_moved`, `on_vm_migrated`,
`on_node_failed`, `on_migration_requested` with vetoes, `on_backup_server_crash`), which they
connect to and disconnect from; the cluster imports none of them and reads no backup setting. The cluster service polls every node every
`cluster.node_poll_interval_s` (a batched heartbeat call, whose answer the next poll reads); a
node that did not answer (its actor died) is declared failed at that poll. Crashes the
simulation itself causes are detected after `heartbeat_threshold x heartbeat_interval_s`, as
the cluster service would [MS].
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster_sim.cluster.api import ClusterApi
from cluster_sim.cluster.csv import CsvTable
from cluster_sim.cluster.faults import Faults
from cluster_sim.cluster.io import IoModel
from cluster_sim.cluster.migration import Migrations
from cluster_sim.cluster.nodes import NodeDown, NodeGateway
from cluster_sim.cluster.signals import Signal
from cluster_sim.cluster.storage import StorageArray
from cluster_sim.cluster.topology import link_capacities
from cluster_sim.cluster.versions import Versions
from cluster_sim.kernel.fluid import FluidNetwork
from cluster_sim.kernel.instant import CountingEnvironment, InstantHooks
from cluster_sim.kernel.rng import Streams
from cluster_sim.kernel.trace import Trace
from cluster_sim.scenario import Scenario
from cluster_sim.scenario.placement import VmSpec, csv_name, initial_coordinator, node_name


@dataclass
class NodeFailure:
    node: str
    detected_s: float
    how: str  # "actor_died" (found by polling) | "crash" (scheduled)
    vms_down: int


class ClusterModel(ClusterApi):
    def __init__(self, sc: Scenario, vms: list[VmSpec], backend, streams: Streams):  # type: ignore[no-untyped-def]
        self.sc = sc
        self.env = CountingEnvironment()
        self.hooks = InstantHooks(self.env)
        self.trace = Trace(self.env)
        self.streams = streams
        self.vms = vms
        self.spec = {v.name: v for v in vms}
        self.nodes = [node_name(i) for i in range(sc.cluster.nodes)]
        self.net = FluidNetwork(self.env, link_capacities(sc), self.hooks, ops_classes=sc.storage.array.controllers)
        coords = {csv_name(i): initial_coordinator(i, sc.cluster.nodes) for i in range(sc.storage.csvs)}
        self.csvs = CsvTable(self.env, coords, self.trace)
        self.csvs.can_coordinate = lambda n: n in self.up  # (a failed node never becomes coordinator)
        self.array = StorageArray(self.env, sc.storage.array, list(coords), self.trace)
        self.io = IoModel(sc, self.net, self.csvs, vms, self.array)
        self.array.on_protection_change = self.io.protection_changed
        self.gateway = NodeGateway(self.env, self.hooks, backend)
        self.gateway.on_down = self._found_down
        self.host: dict[str, str] = {v.name: v.node for v in vms}  # cluster configuration: VM -> owner node
        self.up: set[str] = set(self.nodes)  # the cluster service's view
        self.alive: set[str] = set(self.nodes)  # physical truth: a crashed host is not alive at once
        self.draining: set[str] = set()
        self.failures: list[NodeFailure] = []
        # signals (cluster/signals.py): what subscribers hear of
        self.on_vm_lost = Signal("vm_lost", "(vm, at_s): the VM stopped without a clean shutdown (guest cache lost)")
        self.on_host_crashed = Signal("host_crashed", "(vm, node): the VM's host died under it while it ran")
        self.on_vm_restarted = Signal("vm_restarted", "(vm): a failed-over VM booted on its new host")
        self.on_vm_moved = Signal("vm_moved", "(vm, src, dst): the VM now belongs to another host")
        self.on_vm_migrated = Signal("vm_migrated", "(vm, src, dst): a live migration (or config move) ended")
        self.on_node_failed = Signal("node_failed", "(node): the cluster service declared the node failed")
        self.on_migration_requested = Signal(
            "migration_requested", "(vm) -> ok | refuse | abort: may this VM move now? (a veto)")
        self.on_csv_owner_changed = Signal("csv_owner_changed", "(csv, previous, owner): a CSV's coordinator moved")
        self.csvs.on_owner_moved = self.on_csv_owner_changed.emit
        self.on_backup_server_crash = Signal("backup_server_crash", "(restart_after_s | None): the backup "
                                             "application died")
        self.polls = 0
        self.crashed_at: dict[str, float] = {}
        self.vm_downtime: dict[str, float] = {}  # migration blackouts and failover outages
        self.visited: dict[str, list[str]] = {v.name: [v.node] for v in vms}
        self.failovers = 0
        self.vms_restarted = 0
        self.booting: set[str] = set()  # failed over, not yet running on the survivor
        self.unplaced: set[str] = set()  # failed over with no node to run on (yet)
        self.boot_token: dict[str, int] = {}  # the failover boot that is current for each VM
        self.saved: set[str] = set()  # in saved state for a backup: cannot be moved
        self.incarnation: dict[str, int] = {n: 0 for n in self.nodes}  # bumped when a host dies
        self.migrations = Migrations(self)
        self.versions = Versions(sc, vms)  # mixed-version clusters (cluster/versions.py); inactive without
        self._inventory: dict[str, tuple[int, int]] | None = None
        # live checkpoints per node, of the VMs each node owns: kept as checkpoints come and go and
        # VMs move, not counted over every VM at each writer enumeration (one per set: ws2012r2
        # takes a set per VM)
        self._checkpoints_on: dict[str, int] = {n: 0 for n in self.nodes}
        self.array.on_checkpoint_count = self._checkpoint_count
        # the fault events (cluster/faults.py)
        self.faults = Faults(self)
        self.io.no_fabric = self.faults.no_fabric
        self.io.reachable = self.faults.reachable
        self.array.on_delete_failed = self.faults.delete_failed
        self.on_node_failed.connect(self.faults.membership_changed)

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
        """Liveness: collect the answers of what was sent at the last poll (a dead actor shows up as
        NodeDown), then send each live node what is queued for it and a heartbeat, whose answers
        the next poll collects."""
        interval = self.sc.cluster.node_poll_interval_s
        while True:
            for n in sorted(self.up):
                self.gateway.cast(n, "heartbeat")
            self.gateway.poll()
            self.polls += 1
            yield self.env.timeout(interval)

    # -- placement -----------------------------------------------------------------------------
    def vms_on(self, node: str) -> list[str]:
        return sorted(vm for vm, h in self.host.items() if h == node)

    def candidates(self, exclude: set[str] | None = None, vm: str | None = None) -> list[str]:
        """Nodes that can take VMs (that VM, given one: its configuration version): up, alive, not
        being drained."""
        ex = exclude or set()
        out = [n for n in self.live_nodes() if n not in self.draining and n not in ex]
        if vm is not None and self.versions.active:
            out = [n for n in out if self.versions.can_host(vm, n)]
        return out

    def least_loaded(self, exclude: set[str] | None = None, vm: str | None = None) -> str | None:
        counts = self.vm_counts()
        cands = self.candidates(exclude, vm)
        return min(cands, key=lambda n: (counts.get(n, 0), self.nodes.index(n))) if cands else None

    def node_inventory(self) -> dict[str, tuple[int, int]]:
        """Per node, the VMs it owns (running or not) and their VHDs (cached until a VM moves)."""
        if self._inventory is None:
            inv: dict[str, list[int]] = {n: [0, 0] for n in self.nodes}
            for vm, h in self.host.items():
                inv[h][0] += 1
                inv[h][1] += len(self.spec[vm].disks)
            self._inventory = {n: (a, b) for n, (a, b) in inv.items()}
        return self._inventory

    def vm_counts(self) -> dict[str, int]:
        """Per node, the VMs it owns (a copy: O(nodes), not O(VMs))."""
        return {n: vms for n, (vms, _) in self.node_inventory().items()}

    def _checkpoint_count(self, vm: str, d: int) -> None:
        h = self.host[vm]
        self._checkpoints_on[h] += d

    def _set_host(self, vm: str, dst: str) -> None:
        """The VM belongs to `dst`; the node inventory and checkpoint counts follow (two entries
        each, not a recount)."""
        src = self.host[vm]
        self.host[vm] = dst
        k = self.array.live_checkpoints.get(vm, 0)
        if k and src != dst:
            self._checkpoints_on[src] -= k
            self._checkpoints_on[dst] += k
        inv = self._inventory
        if inv is not None and src != dst:
            inv = dict(inv)  # (an inventory handed out before stays as it was)
            d = len(self.spec[vm].disks)
            a, b = inv[src]
            inv[src] = (a - 1, b - d)
            a, b = inv[dst]
            inv[dst] = (a + 1, b + d)
            self._inventory = inv

    def move_vm_ownership(self, vm: str, src: str, dst: str) -> None:
        """The VM now belongs to `dst` (end of a live migration, or an off VM's move)."""
        spec = self.spec[vm]
        self._set_host(vm, dst)
        self.visited[vm].append(dst)
        self.gateway.cast(src, "evict", vm)
        self.gateway.cast(dst, "host", [(vm, "running" if spec.running else "off")])
        if spec.running and dst in self.alive:
            self.io.move_vm(vm, dst)
        self.on_vm_moved.emit(vm, src, dst)

    def busy(self) -> bool:
        """Cluster work still under way: failures not yet detected, VMs booting, VMs moving."""
        undetected = any(n in self.up and n not in self.alive for n in self.nodes)
        waiting = bool(self.unplaced) and bool(self.candidates())
        return bool(self.booting or self.migrations.requested or undetected or waiting or self.faults.pending)

    # -- failures --------------------------------------------------------------------------------
    def crash(self, node: str) -> None:
        """The host dies now: its actor (volatile state) is gone, its VMs stop, flows through it
        end. The cluster service notices after heartbeat_threshold x heartbeat_interval_s."""
        if node not in self.alive:
            return
        self.gateway.kill(node)
        self._host_died(node)
        self.trace("node_crashed", node=node, vms=len(self.vms_on(node)))
        delay = self.sc.cluster.heartbeat_threshold * self.sc.cluster.heartbeat_interval_s
        self.env.process(self._detect_later(node, delay))

    def _host_died(self, node: str) -> None:
        """Physical death: the host's VMs stop (the guest caches are lost), flows through its
        links end, and anything sent to it from now on reaches a new incarnation or nothing."""
        self.alive.discard(node)
        self.crashed_at[node] = self.env.now
        self.incarnation[node] += 1
        for vm in self.vms_on(node):
            self.io.stop_vm(vm)
            self.saved.discard(vm)
            if self.spec[vm].running:
                self.on_vm_lost.emit(vm, self.env.now)
                self.on_host_crashed.emit(vm, node)
        from cluster_sim.cluster.topology import cluster_nic, fabric, lm_nic

        links = [fabric(node), cluster_nic(node), lm_nic(node, self.sc.cluster.networks.shared_cluster_and_lm)]
        self.net.stop_flows_on(links)

    def _detect_later(self, node: str, delay: float):  # type: ignore[no-untyped-def]
        yield self.env.timeout(delay)
        if node in self.up and node not in self.alive:
            self.node_failed(node, how="crash")

    def _found_down(self, node: str) -> None:
        """The gateway found a node not answering (its actor is gone)."""
        if node in self.alive:  # died on its own: physically dead from now on
            self._host_died(node)
        if node in self.up:
            self.node_failed(node, how="actor_died")

    def node_failed(self, node: str, how: str) -> None:
        """The cluster service declares `node` failed: fail its VMs over, move its CSVs."""
        self.up.discard(node)
        hosted = self.vms_on(node)
        for vm in hosted:
            self.io.stop_vm(vm)
            if self.spec[vm].running:  # (a VM already lost with its host stays lost)
                self.on_vm_lost.emit(vm, self.crashed_at.get(node, self.env.now))
        self.failures.append(NodeFailure(node, self.env.now, how, len(hosted)))
        self.trace("node_failed", node=node, how=how, vms_down=len(hosted))
        self.adopt_orphan_csvs()
        for vol in self.csvs:
            for h in list(vol.holds.values()):
                if h.node == node and h.kind == "metadata":
                    vol.release(h)  # the metadata operation died with its node
        if hosted:
            self.failovers += 1
        for vm in hosted:
            self.unplaced.add(vm)
        self.place_unplaced()
        self.on_node_failed.emit(node)

    def rejoin(self, *nodes: str) -> None:
        """The nodes are members of the cluster again (recovered, back on a side with quorum,
        reinstalled): they count as up, and the CSVs whose coordinator failed while no node could
        take them move now."""
        self.up.update(nodes)
        self.adopt_orphan_csvs()

    def adopt_orphan_csvs(self) -> None:
        """Every CSV whose coordinator the cluster holds failed moves to a node that is up: one
        that takes VMs if there is one, else a draining node (a drained node still runs the
        cluster service and can coordinate CSVs [MS]); with no node up, when one returns."""
        hosts = self.candidates() or self.live_nodes()
        if not hosts:
            return
        for vol in self.csvs:
            if vol.coordinator not in self.up:
                owned = {n: sum(1 for v in self.csvs if v.coordinator == n) for n in hosts}
                vol.move_coordinator(min(hosts, key=lambda n: (owned[n], self.nodes.index(n))))

    def place_unplaced(self, prefer_own: bool = False) -> None:
        """Fail over VMs waiting for a node: each boots on the least loaded available node (with
        `prefer_own`, on its own node if that is available: a cluster regaining quorum).
        With none available (the rest drained or down) they wait until one is."""
        for vm in sorted(self.unplaced):
            own = self.host[vm]
            target = own if prefer_own and own in self.candidates(vm=vm) else self.least_loaded(vm=vm)
            if target is None:
                if self.versions.active:
                    continue  # no node that can run this VM now; others may still find one
                return
            old = self.host[vm]
            self.unplaced.discard(vm)
            self._set_host(vm, target)
            self.visited[vm].append(target)
            self.booting.add(vm)
            self.on_vm_moved.emit(vm, old, target)
            token = self._boot_seq = getattr(self, "_boot_seq", 0) + 1
            self.boot_token[vm] = token
            self.env.process(self._restart_vm(vm, target, self.crashed_at.get(old, self.env.now), token))

    def _restart_vm(self, vm: str, node: str, down_since: float, token: int):  # type: ignore[no-untyped-def]
        """Failover: the VM boots on a survivor (from its crash-consistent disks)."""
        spec = self.spec[vm]
        if spec.running:
            yield self.env.timeout(self.sc.cluster.failover_boot_s)
        if self.boot_token.get(vm) != token:
            return  # superseded: the VM failed over again meanwhile and boots elsewhere
        self.booting.discard(vm)
        if self.host.get(vm) != node or node not in self.alive:
            return
        self.gateway.cast(node, "host", [(vm, "running" if spec.running else "off")])
        if spec.running:
            self.io.start_vm(vm, node)
            self.vm_downtime[vm] = self.vm_downtime.get(vm, 0.0) + self.env.now - down_since
            self.vms_restarted += 1
        self.trace("vm_restarted", vm=vm, node=node)
        self.on_vm_restarted.emit(vm)

    def recover(self, node: str) -> None:
        """The host is back, empty (its VMs failed over), and rejoins the cluster."""
        # an actor that died on its own is found now, not at a later poll: ask it for a heartbeat
        # (its last batch may have been answered before it died) and read every answer due
        self.gateway.cast(node, "heartbeat")
        self.gateway.harvest()
        if node in self.alive and node in self.faults.quorum_lost:
            # not down: its side of a partition lost quorum; it rejoins when the cut heals
            self.trace("recover_skipped", node=node, reason="quorum_lost")
            return
        if node in self.alive and node in self.up:
            return
        if node in self.alive:  # never detected as failed: nothing to do but rejoin
            self.rejoin(node)
            return
        if node in self.up:  # back before the heartbeats ran out: the cluster notices now
            self.node_failed(node, how="crash")
        self.gateway.restart(node)
        self.gateway.cast(node, "reset")
        self.alive.add(node)
        self.faults.quorum_lost.discard(node)  # it may have crashed while its side had no quorum
        if not self.faults.in_quorum(node):  # back on a side of a partition without quorum: it waits
            self.faults.quorum_lost.add(node)
            self.trace("node_recovered", node=node, member=False)
            self.faults.membership_changed(node)
            return
        self.trace("node_recovered", node=node)
        self.rejoin(node)
        self.place_unplaced()
        self.faults.membership_changed(node)

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
