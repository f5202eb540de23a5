"""The local node backend: nodes as in-process objects."""

from __future__ import annotations

from typing import Any

from cluster_sim.cluster.nodes.node import Node, NodeDown, Ops


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
