"""The generations of the backup design, in one place: what each is called, how its job backs up
the VMs (the module whose `body` composes its phases), how long its runs take relative to the
others (to hand the longest out first), and the cluster's quorum rule of that Windows version.

The names themselves are `cluster_sim.scenario.GENERATIONS` (scenario files are checked against
them); this registry must hold exactly those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster_sim.backup import ws2008r2, ws2012, ws2012r2, ws2016
from cluster_sim.scenario import GENERATIONS


@dataclass(frozen=True)
class GenerationInfo:
    name: str
    title: str
    body: Callable[..., Any]  # body(job) -> SimPy process: the job's work (see each module)
    cost: int  # [P] relative cost of a run on the local backend (from the 800-VM profile)
    quorum_rule: str  # cluster/faults.py: static | dynamic | dynamic_tiebreak [MS]


REGISTRY: dict[str, GenerationInfo] = {
    g.name: g for g in (
        GenerationInfo("ws2008r2", "Windows Server 2008 R2", ws2008r2.body, 2, "static"),
        GenerationInfo("ws2012", "Windows Server 2012", ws2012.body, 3, "dynamic"),
        GenerationInfo("ws2012r2", "Windows Server 2012 R2", ws2012r2.body, 4, "dynamic_tiebreak"),
        GenerationInfo("ws2016", "Windows Server 2016", ws2016.body, 1, "dynamic_tiebreak"),
    )
}
assert tuple(REGISTRY) == GENERATIONS, "the registry must hold exactly scenario.GENERATIONS, in order"


def body_of(generation: str) -> Callable[..., Any]:
    return REGISTRY[generation].body


def cost_of(generation: str | None) -> int:
    return REGISTRY[generation].cost if generation in REGISTRY else 0


def quorum_rule_of(generation: str | None) -> str:
    """The quorum rule of the cluster's Windows version (a run without a backup: the newest)."""
    return REGISTRY[generation].quorum_rule if generation in REGISTRY else "dynamic_tiebreak"
