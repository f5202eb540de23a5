"""Mixed-version clusters at run time (cluster OS rolling upgrade [MS]): each node's Windows version,
the functional level, each VM's configuration version, and the events that change them.

- A VM above configuration 5.0 runs on 2016 nodes only: a live migration to a 2012 R2 node is
  refused (`config_version_not_supported`), and failover, drains and load balancing never pick
  one for it [MS]. A 5.0 VM runs anywhere.
- `upgrade_node`: the node is drained (its VMs live-migrate to nodes that can run them), leaves
  the cluster (its CSVs move), is reinstalled for `reinstall_s` and rejoins as ws2016.
- `raise_functional_level`: the level becomes ws2016 (every node must run 2016: checked when the
  scenario is read, and again here).
- `upgrade_vm_config`: each VM is shut down, upgraded and started again (`downtime_s`; a VM in
  saved state for a backup or moving waits until it is not).

Without `cluster.node_versions` nothing here is active: every node can run every VM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import simpy

from cluster_sim.scenario import versions as rules

if TYPE_CHECKING:
    from cluster_sim.scenario import RaiseFunctionalLevel, Scenario, UpgradeNode, UpgradeVmConfig
    from cluster_sim.scenario.placement import VmSpec


class Versions:
    def __init__(self, sc: Scenario, vms: list[VmSpec]):
        self.node = rules.node_versions(sc) or {}
        self.active = sc.cluster.node_versions is not None
        self.level = rules.functional_level(sc) or ""
        self.config = {v.name: v.config_version for v in vms}
        self.upgrading: set[str] = set()  # nodes out of the cluster for their reinstall
        self.vm_upgrades = 0  # VMs whose configuration version was raised
        self.nodes_upgraded = 0

    def can_host(self, vm: str, node: str) -> bool:
        """Can `node` run this VM (its configuration version)?"""
        if not self.active:
            return True
        return self.node[node] == "ws2016" or not rules.needs_2016(self.config[vm])


# ---- the events (run by cluster/events.py) ----------------------------------------------------------
def upgrade_node(cm: Any, ev: UpgradeNode, drain: Any) -> Any:
    """Drain, leave the cluster, reinstall, rejoin as ws2016 (a SimPy process body)."""
    node = ev.node
    v = cm.versions
    if node not in cm.up or node not in cm.alive:
        cm.trace("upgrade_skipped", node=node, reason="node_down")
        return
    cm.trace("node_upgrade_start", node=node, version=v.node[node])
    yield from drain(cm, node, ev.max_concurrent)
    left = cm.vms_on(node)
    if left:  # a VM that could not move (no node can run it): the upgrade waits for nobody, it is an error
        cm.trace("node_upgrade_aborted", node=node, vms_left=len(left))
        cm.draining.discard(node)
        return
    v.upgrading.add(node)
    cm.up.discard(node)  # evicted from the cluster for the reinstall: its CSVs move
    cm.adopt_orphan_csvs()
    yield cm.env.timeout(ev.reinstall_s)
    v.node[node] = "ws2016"
    v.upgrading.discard(node)
    v.nodes_upgraded += 1
    cm.draining.discard(node)
    cm.trace("node_upgrade_done", node=node, version="ws2016")
    cm.rejoin(node)
    cm.place_unplaced()


def raise_functional_level(cm: Any, ev: RaiseFunctionalLevel) -> None:
    v = cm.versions
    old = sorted(n for n, ver in v.node.items() if ver != "ws2016" or n in v.upgrading)
    if old:  # (the scenario check refuses this; a node whose upgrade was aborted lands here)
        cm.trace("functional_level_refused", nodes=",".join(old))
        return
    v.level = "ws2016"
    cm.trace("functional_level_raised", level="ws2016")


def upgrade_vm_config(cm: Any, ev: UpgradeVmConfig) -> Any:
    """Shut down, Update-VMVersion, start: per node `max_concurrent` VMs at a time."""
    v = cm.versions
    if v.level != "ws2016":
        cm.trace("vm_config_upgrade_refused", reason="functional_level", level=v.level)
        return
    names = ev.vms if ev.vms is not None else [s.name for s in cm.vms if ev.template in (None, s.template)]
    todo = [vm for vm in names if v.config[vm] != ev.version]
    slots = {n: simpy.Resource(cm.env, capacity=ev.max_concurrent) for n in cm.nodes}

    def one(vm: str) -> Any:
        while vm in cm.saved or cm.is_migrating(vm) or vm in cm.booting or vm in cm.unplaced:
            yield cm.env.timeout(cm.sc.cluster.migration.retry_s)
        node = cm.host[vm]
        with slots[node].request() as req:
            yield req
            running = cm.spec[vm].running and cm.host[vm] in cm.alive
            if running:
                cm.io.stop_vm(vm)
            t0 = cm.env.now
            yield cm.env.timeout(ev.downtime_s)
            v.config[vm] = ev.version
            v.vm_upgrades += 1
            node = cm.host[vm]
            if running and node in cm.alive and node in cm.up:
                cm.io.start_vm(vm, node)
                cm.vm_downtime[vm] = cm.vm_downtime.get(vm, 0.0) + cm.env.now - t0
            cm.trace("vm_config_upgraded", vm=vm, node=node, version=ev.version)

    procs = [cm.env.process(one(vm)) for vm in sorted(todo)]
    if procs:
        yield simpy.AllOf(cm.env, procs)
