"""Fault events beyond node crashes (README "Fault events"): a cut cluster network and quorum, a
failed array controller, a node that loses its storage fabric, backup target outages and
slowdowns; and the ledger of what injected faults leave behind, which the auditor accounts for.

Partition [MS failover-cluster quorum]. The cut separates the listed nodes from the others (nodes
on one side still reach each other); overlapping cuts split the cluster further. At once, flows
between the sides end (live migrations, backup reads over SMB) and VM I/O redirected across the cut
stalls. After `heartbeat_threshold x heartbeat_interval_s` each side's cluster service sees the
other side's nodes missing and quorum is arbitrated, by node majority:
- ws2008r2: every configured node has a vote (static quorum);
- ws2012: dynamic quorum: only the nodes in the cluster's membership at that moment vote;
- ws2012r2, ws2016 (and a run without a backup): dynamic quorum with the tie-breaker, which takes
  the vote of the highest-numbered member when members are even and there is no witness, and the
  dynamic witness, which votes only when the members are even.
With `cluster.witness` the witness's vote goes to the side holding the lowest-numbered live voter
(it owns the cluster group, and arbitrates the witness disk) [P]. The side with more than half of
the votes keeps running and declares the other sides' nodes failed (how `partition`): their VMs
fail over to it after the boot time and their CSVs move to it. Nodes on a side without quorum
stop their cluster service: their VMs stop at once as in a crash (the guest caches are lost),
their backup steps fail (`quorum_lost`) and are retried; the hosts stay up and rejoin when the cut
heals. If no side has quorum the whole cluster stops until the cut heals. Quorum is arbitrated only
while a cut exists: node crashes alone never stop the cluster here (dynamic quorum lets a
2012-and-later cluster lose nodes one at a time [MS]; a 2008 R2 cluster losing half its nodes by
crashes would stop, which is not modelled).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cluster_sim.cluster.topology import ARRAY_READ, ARRAY_WRITE, BACKUP_TARGET, cluster_nic, fabric, lm_nic
from cluster_sim.kernel.fluid import Flow

if TYPE_CHECKING:
    from cluster_sim.cluster.model import ClusterModel

LEAK_KINDS = ("snapshots", "checkpoints", "mounts", "redirected_holds", "hot_adds")


class Ledger:
    """What injected faults left behind, by cause and kind (ids); counted at the end of the run
    if still not released, so that the auditor can tell a fault's leaks from unexplained ones."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, dict[Any, int]]] = {}

    def left(self, cause: str, kind: str, item: Any, n: int = 1) -> None:
        assert kind in LEAK_KINDS, kind
        per = self.items.setdefault(cause, {}).setdefault(kind, {})
        per[item] = max(per.get(item, 0), n)

    def counts(self, cm: ClusterModel, node_state: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
        """Per cause, the items it left that are still leaked now (an item counts once, for the
        first cause that left it)."""
        mounts: dict[tuple[str, str], int] = {}
        hot: dict[str, int] = {}
        for node, st in node_state.items():
            for vm, n in st.get("mounts", {}).items():
                mounts[(node, vm)] = n
            for vm, v in st.get("vms", {}).items():
                if v.get("hot_added"):
                    hot[vm] = v["hot_added"]
        seen: set[tuple[str, Any]] = set()
        out: dict[str, dict[str, int]] = {}
        for cause in sorted(self.items):
            got = dict.fromkeys(LEAK_KINDS, 0)
            for kind, items in sorted(self.items[cause].items()):
                for item, n in items.items():
                    if (kind, item) in seen:
                        continue
                    seen.add((kind, item))
                    got[kind] += self._still_leaked(cm, kind, item, n, mounts, hot)
            out[cause] = got
        return out

    @staticmethod
    def _still_leaked(cm: ClusterModel, kind: str, item: Any, n: int, mounts: dict[tuple[str, str], int],
                      hot: dict[str, int]) -> int:
        if kind == "snapshots":
            return int(cm.array.snapshots[item].released_s is None)
        if kind == "checkpoints":
            return int(cm.array.checkpoints[item].merged_s is None)
        if kind == "redirected_holds":  # by hold id
            return int(any(h.hid == item and h.released_s is None for h in cm.csvs.leaked_holds()))
        if kind == "mounts":
            left = mounts.get(item, 0)
            take = min(left, n)
            mounts[item] = left - take
            return take
        take = min(hot.get(item, 0), n)  # hot_adds, by VM
        hot[item] = hot.get(item, 0) - take
        return take


class Faults:
    """The cluster's state under the fault events, and their handlers (SimPy processes)."""

    def __init__(self, cm: ClusterModel):
        self.cm = cm
        self.quorum_rule = "dynamic_tiebreak"
        self.cuts: list[frozenset[str]] = []
        self.quorum_lost: set[str] = set()  # alive, out of the membership: their side lost quorum
        self._out_since: dict[str, float] = {}  # alive members outside the quorum side, since when
        self.no_fabric: set[str] = set()  # nodes that lost their storage fabric
        self._fabric_losses: Counter[str] = Counter()
        self._controller_failures: Counter[int] = Counter()
        self.target_outages = 0
        self._slowdowns: list[float] = []
        self.pending = 0  # cluster reactions still to come (the run waits for them, as for a detection)
        self.ledger = Ledger()
        self._pairs: list[tuple[Flow, str, str]] = []  # flows between two nodes over the network
        self.path_loss_moves: dict[str, list[float]] = {}  # CSV -> times its coordinator moved for a lost fabric
        self.timed_holds: set[int] = set()  # holds the cluster will release by its own timeout
        self._reevaluating = False

    # -- the network between nodes ---------------------------------------------------------------
    def reachable(self, a: str, b: str) -> bool:
        """Do nodes a and b reach each other over the cluster and live-migration networks?"""
        if not self.cuts:
            return True
        return all((a in cut) == (b in cut) for cut in self.cuts)

    def pair(self, flow: Flow, a: str, b: str) -> None:
        """A flow between nodes a and b over the network (a partition between them ends it)."""
        if a != b:
            self._pairs = [p for p in self._pairs if p[0].active]
            self._pairs.append((flow, a, b))

    def csv_path(self, node: str, csv: str) -> list[str]:
        """Links from a node to a CSV's LUN: its own fabric, or SMB through the coordinator while
        it has lost its fabric (CSV redirected access [MS])."""
        coord = self.cm.csvs[csv].coordinator
        if node in self.no_fabric and coord != node:
            return [cluster_nic(node), cluster_nic(coord), fabric(coord)]
        return [fabric(node)]

    # -- partition and quorum --------------------------------------------------------------------
    def partition(self, nodes: list[str], duration_s: float) -> Iterator[Any]:
        cm = self.cm
        cut = frozenset(nodes)
        self.cuts.append(cut)
        q = self.quorum_side()
        cm.trace("partition_start", nodes=sorted(cut, key=cm.nodes.index),
                 quorum=sorted(q, key=cm.nodes.index) if q is not None else None)
        for flow, a, b in self._pairs:
            if flow.active and not self.reachable(a, b):
                cm.net.stop(flow)
        self._pairs = [p for p in self._pairs if p[0].active]
        cm.io.paths_changed()
        self.reevaluate()
        yield cm.env.timeout(duration_s)
        self.cuts.remove(cut)
        cm.trace("partition_healed", nodes=sorted(cut, key=cm.nodes.index))
        cm.io.paths_changed()
        self.reevaluate()

    def _components(self, nodes: list[str]) -> list[list[str]]:
        sides: dict[tuple[bool, ...], list[str]] = {}
        for n in nodes:
            sides.setdefault(tuple(n in cut for cut in self.cuts), []).append(n)
        return list(sides.values())

    def quorum_side(self) -> set[str] | None:
        """The live nodes of the side that holds quorum (empty: none), or None without a cut."""
        cm = self.cm
        if not self.cuts:
            return None
        voters = list(cm.nodes) if self.quorum_rule == "static" else [n for n in cm.nodes if n in cm.up]
        votes = dict.fromkeys(voters, 1)
        witness = cm.sc.cluster.witness
        if self.quorum_rule == "dynamic_tiebreak" and voters:
            if witness and len(voters) % 2 == 1:
                witness = False  # dynamic witness: it votes only to make the votes odd [MS]
            elif not witness and len(voters) % 2 == 0:
                votes[voters[-1]] = 0  # the tie-breaker takes the vote of one node [MS]
        total = sum(votes.values()) + (1 if witness else 0)
        holder = next((n for n in voters if n in cm.alive), None)  # owns the cluster group and the witness [P]
        for side in self._components([n for n in cm.nodes if n in cm.alive]):
            v = sum(votes.get(n, 0) for n in side) + (1 if witness and holder in side else 0)
            if 2 * v > total:
                return set(side)
        return set()

    def in_quorum(self, node: str) -> bool:
        q = self.quorum_side()
        return q is None or node in q

    def reevaluate(self) -> None:
        """Who is in the quorum side now: nodes outside it leave the membership after the
        heartbeat threshold (if still outside then); nodes back inside rejoin at once."""
        cm = self.cm
        if self._reevaluating:
            return
        self._reevaluating = True
        try:
            q = self.quorum_side()
            back = []
            for n in cm.nodes:
                if n not in cm.alive:
                    self._out_since.pop(n, None)
                elif q is None or n in q:
                    self._out_since.pop(n, None)
                    if n in self.quorum_lost:
                        back.append(n)
                elif n in cm.up and n not in self._out_since:
                    self._out_since[n] = cm.env.now
                    self.pending += 1
                    cm.env.process(self._detect_later())
            if back:
                self._rejoin(back)
        finally:
            self._reevaluating = False

    def _detection_delay_s(self) -> float:
        c = self.cm.sc.cluster
        return c.heartbeat_threshold * c.heartbeat_interval_s

    def _detect_later(self) -> Iterator[Any]:
        cm = self.cm
        delay = self._detection_delay_s()
        yield cm.env.timeout(delay)
        self.pending -= 1
        q = self.quorum_side()
        losing = [n for n in cm.live_nodes() if n in self._out_since
                  and self._out_since[n] <= cm.env.now - delay + 1e-9 and q is not None and n not in q]
        if losing:
            self._lose(losing, q or set())

    def _lose(self, nodes: list[str], quorum: set[str]) -> None:
        """These nodes' side has no quorum: their cluster service stops. Their VMs stop as in a crash
        (the hosts stay up), the quorum side (if any) declares them failed and takes over."""
        cm = self.cm
        now = cm.env.now
        self._reevaluating = True
        try:
            for n in nodes:
                cm.up.discard(n)
                self.quorum_lost.add(n)
                self._out_since.pop(n, None)
            for n in nodes:
                hosted = cm.vms_on(n)
                running = [vm for vm in hosted if cm.on_host(vm, n) and cm.spec[vm].running]
                cm.incarnation[n] += 1  # the VMs' volatile state on that host is gone
                cm.crashed_at[n] = now
                for vm in hosted:
                    cm.io.stop_vm(vm)
                    cm.saved.discard(vm)
                    cm.gateway.cast(n, "evict", vm)
                for vm in running:
                    cm.on_vm_lost.emit(vm, now)
                    cm.on_host_crashed.emit(vm, n)
                cm.trace("quorum_lost", node=n, vms=len(hosted),
                         quorum=sorted(quorum, key=cm.nodes.index))
            for n in nodes:
                cm.node_failed(n, how="partition")
            shared = cm.sc.cluster.networks.shared_cluster_and_lm
            for n in nodes:  # its backup reads, merges and migrations end with its cluster service
                cm.net.stop_flows_on([fabric(n), cluster_nic(n), lm_nic(n, shared)])
        finally:
            self._reevaluating = False

    def _rejoin(self, nodes: list[str]) -> None:
        """Nodes whose side has quorum again rejoin together; VMs stopped with the cluster start
        on their own node again if it is back, else fail over."""
        cm = self.cm
        for node in nodes:
            self.quorum_lost.discard(node)
            cm.trace("node_rejoined", node=node)
        cm.rejoin(*nodes)
        cm.place_unplaced(prefer_own=True)

    def membership_changed(self, _node: str) -> None:
        """A node failed or came back while a cut exists: votes changed, arbitrate again."""
        if self.cuts:
            self.reevaluate()

    # -- the storage array's controllers -----------------------------------------------------------
    def controller_fail(self, controller: int, duration_s: float) -> Iterator[Any]:
        cm = self.cm
        k = controller - 1
        self._controller_failures[k] += 1
        cm.trace("controller_failed", controller=controller)
        if self._controller_failures[k] == 1:
            moved = cm.array.fail_controller(k)
            self._array_bandwidth()
            for csv in moved:
                cm.io.controller_moved(csv)
        yield cm.env.timeout(duration_s)
        self._controller_failures[k] -= 1
        if self._controller_failures[k] == 0:
            cm.trace("controller_restored", controller=controller)
            moved = cm.array.restore_controller(k)
            self._array_bandwidth()
            for csv in moved:
                cm.io.controller_moved(csv)

    def _array_bandwidth(self) -> None:
        """Each controller serves an even share of the array's bandwidth, as of its IOPS [P]."""
        cm = self.cm
        arr = cm.sc.storage.array
        share = (arr.controllers - len(cm.array.down)) / arr.controllers
        cm.net.set_capacity(ARRAY_READ, arr.read_mib_s * share)
        cm.net.set_capacity(ARRAY_WRITE, arr.write_mib_s * share)

    def delete_failed(self, snap: Any) -> None:
        self.ledger.left("controller_fail", "snapshots", snap.sid)

    # -- a node's storage fabric -------------------------------------------------------------------
    def storage_path_loss(self, node: str, duration_s: float) -> Iterator[Any]:
        cm = self.cm
        self._fabric_losses[node] += 1
        if self._fabric_losses[node] == 1:
            self.no_fabric.add(node)
            cm.trace("storage_path_lost", node=node)
            # a coordinator that loses its storage hands its CSVs to a node that still reaches it [MS]
            able = [n for n in cm.live_nodes() if n not in self.no_fabric]
            owned = {n: sum(1 for v in cm.csvs if v.coordinator == n) for n in able}
            for vol in cm.csvs:
                if vol.coordinator == node and able:
                    to = min(able, key=lambda n: (owned[n], cm.nodes.index(n)))
                    owned[to] += 1
                    self.path_loss_moves.setdefault(vol.name, []).append(cm.env.now)
                    vol.move_coordinator(to)
            cm.io.paths_changed()
            # what read through its fabric ends: backup copies from snapshot LUNs surfaced on it, its
            # merges (they go on redirected)
            cm.net.stop_flows_on([fabric(node)])
        yield cm.env.timeout(duration_s)
        self._fabric_losses[node] -= 1
        if self._fabric_losses[node] == 0:
            self.no_fabric.discard(node)
            cm.trace("storage_path_restored", node=node)
            cm.io.paths_changed()

    # -- the backup target -------------------------------------------------------------------------
    def target_outage(self, duration_s: float) -> Iterator[Any]:
        cm = self.cm
        self.target_outages += 1
        cm.trace("target_outage", duration_s=duration_s)
        cm.net.stop_flows_on([BACKUP_TARGET])  # copies in flight fail; new ones fail until it is back
        yield cm.env.timeout(duration_s)
        self.target_outages -= 1
        if not self.target_outages:
            cm.trace("target_restored")

    def target_slowdown(self, factor: float, duration_s: float) -> Iterator[Any]:
        cm = self.cm
        self._slowdowns.append(factor)
        self._target_capacity()
        cm.trace("target_slowdown", factor=factor, duration_s=duration_s)
        yield cm.env.timeout(duration_s)
        self._slowdowns.remove(factor)
        self._target_capacity()
        cm.trace("target_slowdown_end", factor=factor)

    def _target_capacity(self) -> None:
        cap = self.cm.sc.cluster.networks.backup_target_mib_s
        for f in self._slowdowns:
            cap *= f
        self.cm.net.set_capacity(BACKUP_TARGET, cap)

    # -- cluster timeouts after a dead backup application -----------------------------------------
    def cluster_work(self, gen: Iterator[Any]) -> None:
        """Work the cluster or the array finishes by itself (the run waits for it)."""
        self.pending += 1

        def run() -> Iterator[Any]:
            try:
                yield from gen
            finally:
                self.pending -= 1

        self.cm.env.process(run())

    def release_later(self, vol: Any, hold: Any, at_s: float) -> None:
        """The cluster releases a hold at `at_s` by its own timeout (the run waits for it)."""
        self.timed_holds.add(hold.hid)
        self.cluster_work(self._release_at(vol, hold, at_s))

    def _release_at(self, vol: Any, hold: Any, at_s: float) -> Iterator[Any]:
        env = self.cm.env
        if at_s > env.now:
            yield env.timeout(at_s - env.now)
        vol.release(hold)
