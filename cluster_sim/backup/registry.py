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
    # [P] CPU time of a run per VM on the local backend: cost_ms_per_vm + cost_ms_per_vm_node x nodes
    # (the headline scaled, benchmarks/scaling.py: 800 VMs on 8 nodes and 10,000 on 64, one generation
    # per process): ws2008r2's coordinator moves and redirections cost more the more nodes there are
    cost_ms_per_vm: float
    cost_ms_per_vm_node: float
    quorum_rule: str  # cluster/faults.py: static | dynamic | dynamic_tiebreak [MS]


REGISTRY: dict[str, GenerationInfo] = {
    g.name: g for g in (
        GenerationInfo("ws2008r2", "Windows Server 2008 R2", ws2008r2.body, 1.54, 0.045, "static"),
        GenerationInfo("ws2012", "Windows Server 2012", ws2012.body, 2.43, 0.021, "dynamic"),
        GenerationInfo("ws2012r2", "Windows Server 2012 R2", ws2012r2.body, 2.97, 0.004, "dynamic_tiebreak"),
        GenerationInfo("ws2016", "Windows Server 2016", ws2016.body, 1.2, 0.0, "dynamic_tiebreak"),
    )
}
assert tuple(REGISTRY) == GENERATIONS, "the registry must hold exactly scenario.GENERATIONS, in order"


def body_of(generation: str) -> Callable[..., Any]:
    return REGISTRY[generation].body


def cost_of(generation: str | None, vms: int, nodes: int) -> float:
    """The CPU time one run of the generation takes on the local backend, roughly (ms; 0 for a run
    without a backup): to hand the longest runs out first, and a study's ETA before runs finish."""
    g = REGISTRY.get(generation or "")
    return vms * (g.cost_ms_per_vm + g.cost_ms_per_vm_node * nodes) if g is not None else 0.0


def quorum_rule_of(generation: str | None) -> str:
    """The quorum rule of the cluster's Windows version (a run without a backup: the newest)."""
    return REGISTRY[generation].quorum_rule if generation in REGISTRY else "dynamic_tiebreak"
