"""Scheduled events from the scenario: migrations, drains, crashes, recoveries, snapshot
faults, background load balancing, and the fault events of cluster/faults.py (a crash of the
backup application is told to whoever listens: the backup layer)."""

from __future__ import annotations

import simpy

from cluster_sim.cluster import versions
from cluster_sim.scenario import (
    BackupServerCrash,
    ControllerFail,
    CrashNode,
    DrainNode,
    LoadBalance,
    MigrateVm,
    Partition,
    RecoverNode,
    ResumeNode,
    SnapshotFault,
    StoragePathLoss,
    TargetOutage,
    TargetSlowdown,
)
from cluster_sim.scenario.events import RaiseFunctionalLevel, UpgradeNode, UpgradeVmConfig


def schedule_events(cm) -> None:  # type: ignore[no-untyped-def]
    for i, ev in enumerate(cm.sc.events):
        cm.env.process(_at(cm, i, ev))


def _at(cm, i: int, ev):  # type: ignore[no-untyped-def]
    yield cm.env.timeout(ev.at_s)
    cm.trace("event", index=i, kind=ev.kind)
    if isinstance(ev, MigrateVm):
        cm.migrations.request(ev.vm, ev.to, "event")
    elif isinstance(ev, DrainNode):
        yield from _drain(cm, ev)
    elif isinstance(ev, CrashNode):
        cm.crash(ev.node)
    elif isinstance(ev, RecoverNode):
        cm.recover(ev.node)
    elif isinstance(ev, SnapshotFault):
        cm.array.inject_fault(ev.csv, ev.code, ev.count)
    elif isinstance(ev, LoadBalance):
        yield from _balance(cm, ev)
    elif isinstance(ev, ResumeNode):
        cm.draining.discard(ev.node)  # maintenance over: the node takes VMs again
        cm.place_unplaced()
    elif isinstance(ev, Partition):
        yield from cm.faults.partition(ev.nodes, ev.duration_s)
    elif isinstance(ev, ControllerFail):
        yield from cm.faults.controller_fail(ev.controller, ev.duration_s)
    elif isinstance(ev, StoragePathLoss):
        yield from cm.faults.storage_path_loss(ev.node, ev.duration_s)
    elif isinstance(ev, TargetOutage):
        yield from cm.faults.target_outage(ev.duration_s)
    elif isinstance(ev, TargetSlowdown):
        yield from cm.faults.target_slowdown(ev.factor, ev.duration_s)
    elif isinstance(ev, BackupServerCrash):
        cm.on_backup_server_crash.emit(ev.restart_after_s)
    elif isinstance(ev, UpgradeNode):
        yield from versions.upgrade_node(cm, ev, drain)
    elif isinstance(ev, RaiseFunctionalLevel):
        versions.raise_functional_level(cm, ev)
    elif isinstance(ev, UpgradeVmConfig):
        yield from versions.upgrade_vm_config(cm, ev)


def _drain(cm, ev: DrainNode):  # type: ignore[no-untyped-def]
    """Maintenance: move every VM off the node, `max_concurrent` at a time."""
    yield from drain(cm, ev.node, ev.max_concurrent)


def drain(cm, node: str, max_concurrent: int):  # type: ignore[no-untyped-def]
    if node not in cm.up or node not in cm.alive:
        cm.trace("drain_skipped", node=node, reason="node_down")
        return
    cm.draining.add(node)
    slots = simpy.Resource(cm.env, capacity=max_concurrent)

    def move(vm: str):  # type: ignore[no-untyped-def]
        with slots.request() as req:
            yield req
            if cm.host.get(vm) == node:
                yield cm.migrations.request(vm, None, "drain")

    procs = [cm.env.process(move(vm)) for vm in cm.vms_on(node)]
    if procs:
        yield simpy.AllOf(cm.env, procs)
    left = cm.vms_on(node)
    cm.trace("drain_done", node=node, vms_left=len(left))


def _balance(cm, ev: LoadBalance):  # type: ignore[no-untyped-def]
    """Background load balancing: move VMs from the busiest to the idlest node while the VM
    counts differ by more than `cluster.imbalance_vms`, at most `max_moves` per pass."""
    limit = cm.sc.cluster.imbalance_vms
    while ev.until_s is None or cm.env.now <= ev.until_s:
        counts = cm.vm_counts()
        for vm, dst in cm.migrations.heading.items():  # moves under way count where they go
            counts[cm.host[vm]] -= 1
            counts[dst] += 1
        cands = cm.candidates()
        moves = 0
        while len(cands) >= 2 and moves < ev.max_moves:
            hi = max(cands, key=lambda n: (counts[n], -cm.nodes.index(n)))
            lo = min(cands, key=lambda n: (counts[n], cm.nodes.index(n)))
            if counts[hi] - counts[lo] <= limit:
                break
            vm = next((v for v in cm.vms_on(hi) if v not in cm.migrations.requested and cm.spec[v].running
                       and cm.on_host(v, hi) and cm.versions.can_host(v, lo)), None)  # not one still booting
            if vm is None:
                break
            cm.migrations.request(vm, lo, "load_balance")
            counts[hi] -= 1
            counts[lo] += 1
            moves += 1
        yield cm.env.timeout(ev.every_s)
