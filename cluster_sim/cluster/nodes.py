"""Cluster nodes: the volatile state of the VMs a host runs, in-process or as Ray actors.

`Node` is a plain class. It holds what a host loses when it crashes: each hosted VM's run
state, whether the guest is frozen for VSS, VHDs mounted on the host, disks hot-added to the
VM, and the VM's memory image. Durable state (disks, checkpoints, storage snapshots, RCT) lives
with the storage array on the driver.

`NodeGateway` is the only way the SimPy driver reaches nodes. `cast` queues an operation whose
answer nobody reads; `submit` queues one and returns a `Handle` whose `get()` reads the answer.
Queued operations go out as one `apply` per node at each liveness poll (`poll`: the answers of
the previous poll's batches are collected first, so the driver rarely waits) and whenever an
answer must be read (`harvest`: a crash, the end of the run). Ray calls grow with polls, not with
operations. Both backends run the same `Node` code and read answers at the same points, so results
are identical.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import simpy

from cluster_sim.kernel.instant import InstantHooks

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
    saves: int = 0


@dataclass
class Node:
    name: str
    vms: dict[str, VmVolatile] = field(default_factory=dict)
    ops_applied: int = 0
    mounted: int = 0  # VHDs mounted on this host, all VMs together
    mounts: dict[str, int] = field(default_factory=dict)  # per VM whose snapshot VHDs are mounted here
    stray_ops: int = 0  # operations naming a VM this host does not run (the auditor reports them)

    # -- batch entry point (one per instant) ----------------------------------------------------
    def apply(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        out = []
        for method, args in ops:
            out.append(getattr(self, "op_" + method)(*args))
        self.ops_applied += len(ops)
        return out

    def pid(self) -> int:
        """The id of the process this node runs in (not an operation: tests kill a Ray actor by it)."""
        return os.getpid()

    # -- operations ------------------------------------------------------------------------------
    def op_reset(self) -> None:
        self.vms.clear()
        self.ops_applied = 0
        self.mounted = 0
        self.mounts.clear()
        self.stray_ops = 0

    def op_host(self, vms: list[tuple[str, str]]) -> int:
        for name, state in vms:
            self.vms[name] = VmVolatile(state=state)
        return len(self.vms)

    def op_evict(self, vm: str) -> dict[str, Any] | None:
        v = self.vms.pop(vm, None)
        return None if v is None else v.__dict__.copy()

    def op_heartbeat(self) -> tuple[int, int]:
        """(VMs hosted, VHDs mounted on the host): a cheap liveness answer."""
        return len(self.vms), self.mounted

    def _vm(self, vm: str) -> VmVolatile:
        v = self.vms.get(vm)
        if v is None:
            # a real host answers "VM not found"; the driver should never ask
            self.stray_ops += 1
            return VmVolatile(state="off")
        return v

    def op_freeze(self, vm: str) -> bool:
        v = self._vm(vm)
        if v.state != "running":
            return False
        v.frozen = True
        return True

    def op_thaw(self, vm: str) -> bool:
        v = self._vm(vm)
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
        # the snapshot's VHDs are mounted on the host whether or not the VM still runs here
        self.mounts[vm] = self.mounts.get(vm, 0) + disks
        self.mounted += disks
        return self.mounted

    def op_dismount(self, vm: str, disks: int) -> int:
        n = min(self.mounts.get(vm, 0), disks)
        if n:
            self.mounts[vm] -= n
            if not self.mounts[vm]:
                del self.mounts[vm]
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

    def op_snapshot(self) -> dict[str, Any]:
        return {"vms": {k: v.__dict__.copy() for k, v in sorted(self.vms.items())},
                "mounts": dict(sorted(self.mounts.items())), "stray_ops": self.stray_ops}


# ----------------------------------------------------------------------------------------------
# backends: send a batch without waiting; collect answers of earlier sends together
# ----------------------------------------------------------------------------------------------
Ops = list[tuple[str, tuple[Any, ...]]]


class LocalBackend:
    """Nodes as in-process objects. A batch is applied when it is sent."""

    name = "local"

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.nodes: dict[str, Node | None] = {n: Node(n) for n in names}

    def send(self, node: str, ops: Ops) -> Any:
        obj = self.nodes.get(node)
        return NodeDown(node) if obj is None else obj.apply(ops)

    def collect(self, payloads: list[Any]) -> list[list[Any] | NodeDown]:
        return payloads

    def kill(self, node: str) -> None:
        self.nodes[node] = None  # the object and all it held are gone

    def restart(self, node: str) -> None:
        self.nodes[node] = Node(node)

    def revive_all(self) -> None:
        for node in self.names:
            self.restart(node)

    def close(self) -> None:
        self.nodes.clear()


class BackendFailure(RuntimeError):
    """The node backend itself failed (not a fault of the scenario): a node actor that could not
    be rebuilt, or Ray that stopped answering. The run has no trustworthy result."""


# [P] How many times one node's actor is rebuilt from its log in one generation before the run is
# given up (an actor that keeps dying points at the machine, not at chance).
MAX_REBUILDS_PER_NODE = 3


@dataclass(eq=False)  # compared and hashed by identity
class _Sent:
    """A batch sent to a node actor: the node, its place in the node's log, the answer's ref."""

    node: str
    seq: int
    ref: Any


class RayBackend:
    """Nodes as Ray actors, one per cluster node, created once per run and reset per generation.

    An actor runs the calls of one caller in the order they were sent, so sending without
    waiting keeps every node's state exactly as the local backend has it.

    Faults of the machinery are not faults of the scenario. The backend keeps, per node, every
    batch sent to its current actor since the actor was created or the generation started (a
    generation begins with `reset`, so older batches do not matter). An actor that dies without
    the scenario asking (an OOM kill, a lost worker) or that does not answer within
    `call_timeout_s` (a hung or stopped process) is killed and replaced by a fresh actor that
    replays the log: it reaches the same state and gives the same answers, so results stay
    identical to the local backend. If that fails `MAX_REBUILDS_PER_NODE` times, `BackendFailure`
    ends the run. Only the scenario's crashes (`kill`) and the test hook `kill_behind_our_back`
    make a node stop answering (`NodeDown`)."""

    name = "ray"

    def __init__(self, names: list[str], call_timeout_s: float = 60.0, start_timeout_s: float = 300.0):
        import ray

        self._ray = ray
        self._remote = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(Node)
        self.names = list(names)
        self.call_timeout_s = call_timeout_s  # deadline of an answer from a running actor
        self.start_timeout_s = start_timeout_s  # deadline of the first answer of a new actor
        self.actors: dict[str, Any] = {}
        self.log: dict[str, list[Ops]] = {}  # batches sent to the current actor (see the class doc)
        self.fresh: set[str] = set()  # actors that have not answered yet (still starting)
        self.dead_on_purpose: set[str] = set()  # killed by kill_behind_our_back: NodeDown, not rebuilt
        self.rebuilds: dict[str, int] = {}
        self.notes: list[str] = []  # what the backend did about faults of its own (rebuilds)
        for n in names:
            self.restart(n)
        self._wait_started(list(self.names))

    # -- sending and collecting ------------------------------------------------------------------
    def send(self, node: str, ops: Ops) -> Any:
        actor = self.actors.get(node)
        if actor is None:
            return NodeDown(node)
        log = self.log[node]
        log.append(ops)
        return _Sent(node, len(log) - 1, actor.apply.remote(ops))

    def collect(self, payloads: list[Any]) -> list[list[Any] | NodeDown]:
        sent = [p for p in payloads if isinstance(p, _Sent)]
        got = self._answers(sent)
        return [p if isinstance(p, NodeDown) else got[id(p)] for p in payloads]

    def _answers(self, sent: list[_Sent]) -> dict[int, list[Any] | NodeDown]:
        """The answer of every batch (by id of its `_Sent`). A node whose actor died or hung is
        rebuilt and its unanswered batches sent again, until every batch has an answer."""
        values, lost = self._wait(sent)
        got: dict[int, list[Any] | NodeDown] = dict(values)
        for node in sorted({s.node for s in lost}):
            mine = sorted((s for s in lost if s.node == node), key=lambda s: s.seq)
            if node in self.dead_on_purpose or self.actors.get(node) is None:
                got.update((id(s), NodeDown(node)) for s in mine)
                continue
            again = self._rebuild(node, [s.seq for s in mine], lost[mine[0]])
            answers = self._answers(again)
            for old, new in zip(mine, again, strict=True):
                got[id(old)] = answers[id(new)]
        return got

    def _wait(self, sent: list[_Sent]) -> tuple[dict[int, list[Any]], dict[_Sent, str]]:
        """Answers that came in time, and the batches without one (with why: died or timed out)."""
        ray = self._ray
        import time

        values: dict[int, list[Any]] = {}
        lost: dict[_Sent, str] = {}
        pending = {s.ref: s for s in sent}
        t0 = time.monotonic()
        while pending:
            deadlines = {ref: t0 + (self.start_timeout_s if s.node in self.fresh else self.call_timeout_s)
                         for ref, s in pending.items()}
            left = min(deadlines.values()) - time.monotonic()
            ready: list[Any] = []
            if left > 0:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=left)
            if not ready:  # the earliest deadline passed: every batch past its own is hung
                now = time.monotonic()
                for ref in [r for r, d in deadlines.items() if d <= now]:
                    s = pending.pop(ref)
                    lost[s] = f"no answer within {now - t0:.0f} s"
                continue
            done = [pending.pop(ref) for ref in ready]
            try:  # every answer at once (the usual case: nobody died)
                answers = ray.get([s.ref for s in done], timeout=self.call_timeout_s)
            except ray.exceptions.RayTaskError:
                raise  # the node code itself raised: a bug, as on the local backend
            except ray.exceptions.RayError:
                answers = None
            for k, s in enumerate(done):
                try:
                    values[id(s)] = answers[k] if answers is not None else ray.get(s.ref, timeout=self.call_timeout_s)
                    self.fresh.discard(s.node)
                except ray.exceptions.RayTaskError:
                    raise
                except ray.exceptions.RayError as exc:
                    lost[s] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
        return values, lost

    def _rebuild(self, node: str, unanswered: list[int], why: str) -> list[_Sent]:
        """Replace the node's actor by a fresh one that replays its log; send the unanswered
        batches again. Returns the new sends, in the order of `unanswered`."""
        n = self.rebuilds[node] = self.rebuilds.get(node, 0) + 1
        if n > MAX_REBUILDS_PER_NODE:
            raise BackendFailure(
                f"the Ray actor of {node} failed {n} times in this generation ({why}); the run is stopped "
                f"because its results could not be trusted (a node crash is simulated only when the scenario "
                f"asks for one). Check the machine's memory and the Ray logs, or use --backend local")
        log = self.log[node]
        old = self.actors[node]
        try:
            self._ray.kill(old, no_restart=True)  # a hung actor must not come back and answer
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        self.actors[node] = actor = self._remote.remote(node)
        self.fresh.add(node)
        first = unanswered[0]
        if unanswered != list(range(first, len(log))):  # an actor answers in order: never happens
            raise BackendFailure(f"{node}: batches {unanswered} unanswered out of order; cannot replay")
        answered = [op for batch in log[:first] for op in batch]
        if answered:
            actor.apply.remote(answered)  # its answers were read before: only the state matters
        self.notes.append(f"{node}: Ray actor lost ({why}); rebuilt from its log ({len(answered)} operations "
                          f"replayed, {len(unanswered)} batches sent again)")
        return [_Sent(node, seq, actor.apply.remote(log[seq])) for seq in unanswered]

    # -- life cycle ---------------------------------------------------------------------------------
    def _wait_started(self, nodes: list[str]) -> None:
        """Wait until these (new, empty) actors answer; one that dies or does not answer in time is
        replaced (it held nothing yet), up to MAX_REBUILDS_PER_NODE times."""
        tries = dict.fromkeys(nodes, 0)
        while nodes:
            sent = [self.send(n, []) for n in nodes]
            for n in nodes:
                self.log[n].clear()
            _values, lost = self._wait([s for s in sent if isinstance(s, _Sent)])
            nodes = []
            for s, why in sorted(lost.items(), key=lambda kv: kv[0].node):
                tries[s.node] += 1
                if tries[s.node] > MAX_REBUILDS_PER_NODE:
                    raise BackendFailure(
                        f"the Ray actor of {s.node} could not be started ({tries[s.node]} tries; last: {why}; "
                        f"a first answer may take run.ray_start_timeout_s = {self.start_timeout_s:g} s)")
                self.notes.append(f"{s.node}: new Ray actor lost before its first answer ({why}); replaced")
                try:
                    self._ray.kill(self.actors[s.node], no_restart=True)
                except Exception:  # noqa: BLE001 - it may be gone already
                    pass
                self.restart(s.node)
                nodes.append(s.node)

    def kill(self, node: str) -> None:
        """The scenario crashes the node: its actor goes, nothing replaces it until `restart`."""
        actor = self.actors.get(node)
        if actor is not None:
            self._ray.kill(actor, no_restart=True)
            self._wait_dead(actor)
        self.actors[node] = None
        self.log[node] = []

    def kill_behind_our_back(self, node: str) -> None:
        """Kill the actor without telling anyone (tests: an actor dying on its own, which the
        cluster must find by polling; it is not rebuilt)."""
        actor = self.actors.get(node)
        if actor is not None:
            self.dead_on_purpose.add(node)
            self._ray.kill(actor, no_restart=True)
            self._wait_dead(actor)

    def _wait_dead(self, actor: Any) -> None:
        # ray.kill is asynchronous; wait until the actor refuses calls so that the death falls
        # at the same point of the simulation on every run.
        import time

        ray = self._ray
        give_up = time.monotonic() + self.call_timeout_s
        while time.monotonic() < give_up:
            try:
                ray.get(actor.apply.remote([]), timeout=max(0.1, min(10.0, give_up - time.monotonic())))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                return
            time.sleep(0.05)
        raise BackendFailure(f"a killed Ray actor kept answering for {self.call_timeout_s:g} s")

    def restart(self, node: str) -> None:
        self.actors[node] = self._remote.remote(node)
        self.log[node] = []
        self.fresh.add(node)
        self.dead_on_purpose.discard(node)

    def revive_all(self) -> None:
        """Before a generation: every node gets a live actor with an empty log. Actors the last
        generation killed (or killed behind its back) are replaced; the others are asked to answer,
        and one that does not (it died between generations) is replaced too."""
        self.rebuilds.clear()
        for node in self.names:
            if self.actors.get(node) is None or node in self.dead_on_purpose:
                old = self.actors.get(node)
                if old is not None:
                    self._ray.kill(old, no_restart=True)
                self.restart(node)
        sent = [self.send(n, []) for n in self.names]
        _values, lost = self._wait([s for s in sent if isinstance(s, _Sent)])
        for s, why in sorted(lost.items(), key=lambda kv: kv[0].node):
            self.notes.append(f"{s.node}: Ray actor lost between generations ({why}); replaced")
            try:
                self._ray.kill(self.actors[s.node], no_restart=True)
            except Exception:  # noqa: BLE001
                pass
            self.restart(s.node)
        if lost:
            self._wait_started(sorted(s.node for s in lost))
        for n in self.names:
            self.log[n] = []

    def close(self) -> None:
        for node in list(self.actors):
            actor = self.actors[node]
            if actor is not None:
                self._ray.kill(actor, no_restart=True)
        self.actors.clear()


# ----------------------------------------------------------------------------------------------
# gateway
# ----------------------------------------------------------------------------------------------
class _Ticket:
    __slots__ = ("node", "payload", "value", "collected")

    def __init__(self, node: str, payload: Any):
        self.node = node
        self.payload = payload
        self.value: list[Any] | NodeDown | None = None
        self.collected = False


class Handle:
    """The future answer of one node operation; `get()` reads it (waiting if it must)."""

    __slots__ = ("gateway", "node", "pos", "ticket")

    def __init__(self, gateway: NodeGateway, node: str, pos: int):
        self.gateway = gateway
        self.node = node
        self.pos = pos
        self.ticket: _Ticket | None = None

    def get(self) -> Any:
        gw = self.gateway
        if self.ticket is None:
            gw.flush()  # still queued in this instant: send now
        assert self.ticket is not None
        if not self.ticket.collected:
            gw.harvest()
        value = self.ticket.value
        if isinstance(value, NodeDown):
            raise NodeDown(self.node)
        assert value is not None
        return value[self.pos]


class NodeGateway:
    """The driver's only way to reach nodes.

    `cast` and `submit` queue an operation for a node. Queued operations are sent at a poll
    (`poll()`: collect what earlier polls sent, then send without waiting) or when an answer is
    read (`Handle.get()`, `harvest()`: a crash, the end of a run: send, then collect everything
    with one wait); each node's queue goes out as one batch. A node runs its operations in the
    order they were queued whichever backend runs it, so the node state every read sees is the
    same on both backends; Ray calls grow with polls and reads, not with operations. A node found
    not to answer is reported through `on_down`.
    """

    def __init__(self, env: simpy.Environment, hooks: InstantHooks, backend: LocalBackend | RayBackend):
        self.env = env
        self.hooks = hooks
        self.backend = backend
        self._ops: dict[str, Ops] = {}
        self._handles: dict[str, list[Handle]] = {}
        self._outstanding: list[_Ticket] = []
        self.sends = 0  # batches sent
        self.waits = 0  # times the driver waited for answers
        self.calls = 0
        self.down: set[str] = set()  # nodes found not answering
        self.on_down: Callable[[str], None] | None = None

    @property
    def round_trips(self) -> int:
        return self.waits

    def _queue(self, node: str, method: str, args: tuple[Any, ...]) -> int:
        ops = self._ops.setdefault(node, [])
        ops.append((method, args))
        self.calls += 1
        return len(ops) - 1

    def submit(self, node: str, method: str, *args: Any) -> Handle:
        h = Handle(self, node, -1)
        if node in self.down:
            h.ticket = _Ticket(node, None)
            h.ticket.value, h.ticket.collected = NodeDown(node), True
            return h
        h.pos = self._queue(node, method, args)
        self._handles.setdefault(node, []).append(h)
        return h

    def cast(self, node: str, method: str, *args: Any) -> None:
        """Queue an operation whose answer nobody reads."""
        if node not in self.down:
            self._queue(node, method, args)

    def flush(self) -> None:
        """Send every queued operation (one batch per node), without waiting."""
        if not self._ops:
            return
        batches, self._ops = self._ops, {}
        handles, self._handles = self._handles, {}
        for node in sorted(batches):
            t = _Ticket(node, self.backend.send(node, batches[node]))
            self.sends += 1
            self._outstanding.append(t)
            for h in handles.get(node, []):
                h.ticket = t

    def harvest(self) -> None:
        """Send what is queued and collect the answers of every batch sent so far (one wait)."""
        self.flush()
        self._collect()

    def poll(self) -> None:
        """Collect the answers of every batch sent before now, then send what is queued without
        waiting: its answers are collected by the next poll. The nodes run a batch while the
        simulation goes on, so by the next poll its answers are usually there and the driver does not
        wait; a node that died since the last poll is found by the poll after its first unanswered
        batch. Both backends read answers at the same polls, so results stay identical."""
        self._collect()
        self.flush()

    def _collect(self) -> None:
        if not self._outstanding:
            return
        tickets, self._outstanding = self._outstanding, []
        self.waits += 1
        values = self.backend.collect([t.payload for t in tickets])
        for t, v in zip(tickets, values, strict=True):
            t.value, t.collected = v, True
        for t in tickets:
            if isinstance(t.value, NodeDown):
                self._mark_down(t.node)

    def _mark_down(self, node: str) -> None:
        if node not in self.down:
            self.down.add(node)
            self._ops.pop(node, None)
            if self.on_down is not None:
                self.on_down(node)

    def kill(self, node: str) -> None:
        """The host dies now: its volatile state is lost. The cluster learns of it separately."""
        self.harvest()  # every batch sent before the crash has run
        self._ops.pop(node, None)
        self.backend.kill(node)
        self.down.add(node)

    def restart(self, node: str) -> None:
        self.backend.restart(node)
        self.down.discard(node)
