"""Node actors that die behind the cluster's back, for the tests (not a product feature: the product
never kills its own actors). `run_killing(sc, kills, ...)` is `cluster_sim.run` with each (node, at_s)
of `kills` killing that node's actor at `at_s` of simulated time in every generation, without the
cluster being told; the cluster finds out as it would from a lost worker process (a failed call)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import cluster_sim
from cluster_sim.cluster.nodes import RayBackend
from cluster_sim.simulation import assemble

Kills = list[tuple[str, float]]


def _kill_later(cm: Any, node: str, at_s: float):  # type: ignore[no-untyped-def]
    yield cm.env.timeout(at_s)
    cm.trace("actor_killed", node=node)
    # every batch sent so far has run (a local node applies a batch when it is sent; an actor may
    # still be working through one), so the death falls at the same point on both backends
    cm.gateway.harvest()
    backend = cm.gateway.backend
    if isinstance(backend, RayBackend):
        backend.kill_behind_our_back(node)
    else:
        backend.kill(node)


@contextmanager
def actors_dying(kills: Kills | None) -> Iterator[None]:
    """While inside, every generation that starts (in this process or a worker forked from it) has
    the actors of `kills` die at their instants."""
    real = assemble.schedule_events

    def schedule_with_kills(cm: Any) -> None:
        real(cm)
        for node, at_s in kills or []:
            cm.env.process(_kill_later(cm, node, at_s))

    with mock.patch.object(assemble, "schedule_events", schedule_with_kills):
        yield


def run_killing(sc: Any, kills: Kills | None, **kw: Any) -> Any:
    with actors_dying(kills):
        return cluster_sim.run(sc, **kw)
