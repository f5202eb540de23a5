"""Cluster nodes: the volatile state of the VMs a host runs, in-process or as Ray actors.

`Node` is a plain class. It holds what a host loses when it crashes: each hosted VM's run
state, whether the guest is frozen for VSS, VHDs mounted on the host, disks hot-added to the
VM, and the VM's memory image. Durable state (disks, checkpoints, storage snapshots, RCT) lives
with the storage array on the driver.

`NodeGateway` is the only way the SimPy driver reaches nodes. `call` returns a SimPy event that
fires with the node's answer; `cast` sends without waiting. Everything sent during one
simulated instant goes out together at the end of that instant: one `apply` per node and,
on Ray, one wait for all of them, so Ray round trips grow with instants, not with calls.
Both backends run the same `Node` code and the same batching, so results are identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import simpy

from cluster_sim.kernel.instant import NODE_CALLS, InstantHooks

VM_STATES = ("running", "paused", "saved", "off")


class NodeDown(Exception):
    """The node did not answer: its host (actor) is gone."""

    def __init__(self, node: str):
        super().__init__(node)  # args = (node,): SimPy re-creates exceptions from args
        self.node = node

    def __str__(self) -> str:
        return f"{self.node} is down"


@dataclass
class VmVolatile:
    state: str = "running"
    frozen: bool = False
    hot_added: int = 0
    mounted: int = 0  # this VM's VHDs mounted on the host (auto-recovery)
    saves: int = 0


@dataclass
class Node:
    name: str
    vms: dict[str, VmVolatile] = field(default_factory=dict)
    ops_applied: int = 0
    mounted: int = 0  # VHDs mounted on this host, all VMs together

    # -- batch entry point (one per instant) ----------------------------------------------------
    def apply(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        out = []
        for method, args in ops:
            out.append(getattr(self, "op_" + method)(*args))
        self.ops_applied += len(ops)
        return out

    # -- operations ------------------------------------------------------------------------------
    def op_reset(self) -> None:
        self.vms.clear()
        self.ops_applied = 0
        self.mounted = 0

    def op_host(self, vms: list[tuple[str, str]]) -> int:
        for name, state in vms:
            self.vms[name] = VmVolatile(state=state)
        return len(self.vms)

    def op_evict(self, vm: str) -> dict[str, Any] | None:
        v = self.vms.pop(vm, None)
        if v is None:
            return None
        self.mounted -= v.mounted
        return v.__dict__.copy()

    def op_heartbeat(self) -> tuple[int, int]:
        """(VMs hosted, VHDs mounted on the host): a cheap liveness answer."""
        return len(self.vms), self.mounted

    def mounted_total(self) -> int:
        return self.mounted

    def _vm(self, vm: str) -> VmVolatile:
        v = self.vms.get(vm)
        if v is None:
            raise KeyError(f"{vm} is not hosted on {self.name}")
        return v

    def op_freeze(self, vm: str) -> bool:
        v = self.vms.get(vm)
        if v is None or v.state != "running":
            return False
        v.frozen = True
        return True

    def op_thaw(self, vm: str) -> bool:
        v = self.vms.get(vm)
        if v is None:
            return False
        was = v.frozen
        v.frozen = False
        return was

    def op_set_state(self, vm: str, state: str) -> str:
        if state not in VM_STATES:
            raise ValueError(state)
        v = self._vm(vm)
        old = v.state
        if state == "saved" and old != "saved":
            v.saves += 1
        v.state = state
        return old

    def op_mount(self, vm: str, disks: int) -> int:
        """Mount `disks` VHDs of `vm` on the host; returns VHDs mounted on this host now."""
        self._vm(vm).mounted += disks
        self.mounted += disks
        return self.mounted

    def op_dismount(self, vm: str, disks: int) -> int:
        v = self._vm(vm)
        n = min(v.mounted, disks)
        v.mounted -= n
        self.mounted -= n
        return self.mounted

    def op_hot_add(self, vm: str) -> int:
        v = self._vm(vm)
        v.hot_added += 1
        return v.hot_added

    def op_hot_remove(self, vm: str) -> int:
        v = self._vm(vm)
        v.hot_added = max(0, v.hot_added - 1)
        return v.hot_added

    def op_snapshot(self) -> dict[str, dict[str, Any]]:
        return {k: v.__dict__.copy() for k, v in sorted(self.vms.items())}


# ----------------------------------------------------------------------------------------------
# backends
# ----------------------------------------------------------------------------------------------
class LocalBackend:
    """Nodes as in-process objects."""

    name = "local"

    def __init__(self, names: list[str]):
        self.nodes: dict[str, Node | None] = {n: Node(n) for n in names}
        self.names = list(names)

    def submit(self, batches: dict[str, list[tuple[str, tuple[Any, ...]]]]) -> dict[str, list[Any] | NodeDown]:
        out: dict[str, list[Any] | NodeDown] = {}
        for node, ops in batches.items():
            obj = self.nodes.get(node)
            out[node] = NodeDown(node) if obj is None else obj.apply(ops)
        return out

    def kill(self, node: str) -> None:
        self.nodes[node] = None  # the object and all it held are gone

    def restart(self, node: str) -> None:
        self.nodes[node] = Node(node)

    def revive_all(self) -> None:
        for node in list(self.nodes):
            self.restart(node)

    def close(self) -> None:
        self.nodes.clear()


class RayBackend:
    """Nodes as Ray actors (one per cluster node), created once and reset per run."""

    name = "ray"

    def __init__(self, names: list[str], prefix: str = "cluster-sim"):
        import ray

        self._ray = ray
        self._remote = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(Node)
        self.prefix = prefix
        self.actors: dict[str, Any] = {}
        for n in names:
            self.restart(n)

    def submit(self, batches: dict[str, list[tuple[str, tuple[Any, ...]]]]) -> dict[str, list[Any] | NodeDown]:
        ray = self._ray
        refs = {}
        out: dict[str, list[Any] | NodeDown] = {}
        for node, ops in batches.items():
            actor = self.actors.get(node)
            if actor is None:
                out[node] = NodeDown(node)
            else:
                refs[node] = actor.apply.remote(ops)
        for node, ref in refs.items():  # all sent above; wait for the answers together
            try:
                out[node] = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError):
                self.actors[node] = None
                out[node] = NodeDown(node)
        return out

    def kill(self, node: str) -> None:
        actor = self.actors.get(node)
        if actor is not None:
            self._ray.kill(actor, no_restart=True)
        self.actors[node] = None

    def kill_behind_our_back(self, node: str) -> None:
        """Kill the actor without telling the gateway (tests: an actor dying on its own)."""
        actor = self.actors.get(node)
        if actor is not None:
            self._ray.kill(actor, no_restart=True)

    def restart(self, node: str) -> None:
        self.actors[node] = self._remote.remote(node)

    def revive_all(self) -> None:
        for node, actor in list(self.actors.items()):
            if actor is None:
                self.restart(node)

    def close(self) -> None:
        for node in list(self.actors):
            self.kill(node)
        self.actors.clear()


# ----------------------------------------------------------------------------------------------
# gateway
# ----------------------------------------------------------------------------------------------
class NodeGateway:
    def __init__(self, env: simpy.Environment, hooks: InstantHooks, backend: LocalBackend | RayBackend):
        self.env = env
        self.hooks = hooks
        self.backend = backend
        self._ops: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        self._waiters: dict[str, list[tuple[int, simpy.Event]]] = {}
        self._need_flush = False
        self.round_trips = 0
        self.calls = 0
        self.down: set[str] = set()  # nodes found not answering
        self.on_down: Callable[[str], None] | None = None

    def call(self, node: str, method: str, *args: Any) -> simpy.Event:
        """Queue a call; the returned event fires with the answer at the end of this instant,
        or fails with NodeDown."""
        ev = self.env.event()
        if node in self.down:
            ev.fail(NodeDown(node))
            ev.defused = True
            return ev
        ops = self._ops.setdefault(node, [])
        self._waiters.setdefault(node, []).append((len(ops), ev))
        ops.append((method, args))
        self.calls += 1
        if not self._need_flush:
            self._need_flush = True
            self.hooks.request(NODE_CALLS, self.flush)
        return ev

    def cast(self, node: str, method: str, *args: Any) -> None:
        """Queue a call whose answer nobody waits for (sent with the next batch)."""
        if node in self.down:
            return
        self._ops.setdefault(node, []).append((method, args))
        self.calls += 1

    def flush(self) -> None:
        self._need_flush = False
        if not self._ops:
            return
        batches, self._ops = self._ops, {}
        waiters, self._waiters = self._waiters, {}
        self.round_trips += 1
        results = self.backend.submit(batches)
        for node in sorted(results):
            res = results[node]
            if isinstance(res, NodeDown):
                for _, ev in waiters.get(node, []):
                    ev.fail(NodeDown(node))
                    ev.defused = True
                self._mark_down(node)
            else:
                for pos, ev in waiters.get(node, []):
                    ev.succeed(res[pos])

    def _mark_down(self, node: str) -> None:
        if node not in self.down:
            self.down.add(node)
            if self.on_down is not None:
                self.on_down(node)

    def kill(self, node: str) -> None:
        """The host dies now: its volatile state is lost. The cluster learns of it separately."""
        self._ops.pop(node, None)
        for _, ev in self._waiters.pop(node, []):
            ev.fail(NodeDown(node))
            ev.defused = True
        self.backend.kill(node)
        self.down.add(node)

    def restart(self, node: str) -> None:
        self.backend.restart(node)
        self.down.discard(node)
