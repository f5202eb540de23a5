"""`NodeGateway`: the SimPy driver's only way to reach nodes (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import simpy

from cluster_sim.cluster.nodes.local import LocalBackend
from cluster_sim.cluster.nodes.node import NodeDown, Ops
from cluster_sim.cluster.nodes.ray_backend import RayBackend
from cluster_sim.kernel.instant import InstantHooks


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
        self.waits = 0  # times the driver waited for answers
        self.down: set[str] = set()  # nodes found not answering
        self.on_down: Callable[[str], None] | None = None

    @property
    def round_trips(self) -> int:
        return self.waits

    def _queue(self, node: str, method: str, args: tuple[Any, ...]) -> int:
        ops = self._ops.setdefault(node, [])
        ops.append((method, args))
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
