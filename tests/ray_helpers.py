"""A Ray node backend that kills (or stops) one node actor's worker process for real, at a chosen
batch: shared by tests/test_ray_faults.py and the property tests (a plain module, not a conftest)."""

from __future__ import annotations

import os
import signal

from cluster_sim.cluster.nodes import RayBackend


def actor_pid(backend: RayBackend, node: str) -> int:
    """The PID of the worker process running this node's actor, asked of the actor itself."""
    return backend._ray.get(backend.actors[node].__ray_call__.remote(lambda _node: os.getpid()), timeout=60)


class KillingBackend(RayBackend):
    """A Ray backend whose `victim` actor's worker process gets `sig` right before the `at_send`-th
    batch of operations is sent to it (each generation counts anew), as an OOM killer or a frozen
    machine would do. That batch finds the actor gone, so its loss is found in the generation it
    happens in (killed after its last batch of a generation, the loss showed only if another batch
    came: a race with the end of the run)."""

    def __init__(self, names, victim: str, at_send: int, sig: int = signal.SIGKILL, **kw):  # type: ignore[no-untyped-def]
        self.victim, self.at_send, self.sig = victim, at_send, sig
        self.sent = 0
        self.hit: list[int] = []  # PIDs signalled
        self.after = 0  # batches sent to the victim since (the first of them the killed actor's)
        super().__init__(names, **kw)

    def revive_all(self) -> None:
        super().revive_all()
        self.sent = 0

    def send(self, node, ops):  # type: ignore[no-untyped-def]
        actor = self.actors.get(node)
        mine = node == self.victim and actor is not None and bool(ops)  # (not the backend's own pings)
        if mine:
            self.sent += 1
            if self.sent == self.at_send:
                pid = actor_pid(self, node)
                os.kill(pid, self.sig)
                self.hit.append(pid)
            if self.hit:
                self.after += 1
        return super().send(node, ops)
