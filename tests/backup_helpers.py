"""Small scenario factory shared by the backup tests (a plain module, not a conftest).

Scenarios are tiny (2-6 nodes, a few VMs, disks of a few GiB) so one generation runs in a
fraction of a second on the local backend.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import cluster_sim
from cluster_sim.results import GenerationResult
from cluster_sim.scenario import GENERATIONS, Scenario, scenario_from_dict

ALL_GENS = list(GENERATIONS)
LEGACY = ["ws2008r2", "ws2012"]  # host auto-recovery generations (saved-state fallback)
PRE_2016 = ["ws2008r2", "ws2012", "ws2012r2"]  # the per-VM / per-batch VSS pipeline


def template(name: str = "win", count: int = 2, disks: int = 1, size_gib: float = 2.0,
             disk_format: str | None = None, **kw: Any) -> dict:
    """One fleet template; extra keyword arguments are template fields (guest_os, filesystem...)."""
    disk: dict[str, Any] = {"size_gib": size_gib}
    if disk_format is not None:
        disk["format"] = disk_format
    d: dict[str, Any] = {
        "template": name,
        "count": count,
        "memory_gib": 2,
        "disks": [dict(disk) for _ in range(disks)],
    }
    d.update(kw)
    return d


def scenario_dict(
    fleet: list[dict] | None = None,
    nodes: int = 2,
    csvs: int | None = None,
    backup: dict | None = None,
    array: dict | None = None,
    seed: int = 42,
    placement: str = "round_robin",
    name: str = "test",
) -> dict:
    return {
        "name": name,
        "seed": seed,
        "cluster": {"nodes": nodes},
        "storage": {"csvs": csvs if csvs is not None else nodes, "array": dict(array or {})},
        "fleet": copy.deepcopy(fleet if fleet is not None else [template()]),
        "placement": placement,
        "backup": dict(backup or {}),
        "run": {"backend": "local", "until_s": 86400},
    }


def build(**kw: Any) -> Scenario:
    return scenario_from_dict(scenario_dict(**kw))


def run_gens(sc: Scenario | dict, gens: list[str] | None = None) -> dict[str, GenerationResult]:
    """Run the scenario on the local backend; {generation: GenerationResult}."""
    if isinstance(sc, dict):
        sc = scenario_from_dict(sc)
    res = cluster_sim.run(sc, backend="local", generations=list(gens or ALL_GENS))
    return res.by_generation()


def outcome_counts(g: GenerationResult) -> dict[str, int]:
    """Non-zero outcome counts from the summary."""
    return {k: v for k, v in g.summary.outcomes.model_dump().items() if v}


def row_counter(g: GenerationResult) -> Counter:
    """Counter of (outcome, reason) over the per-VM rows."""
    return Counter((r.outcome, r.reason) for r in g.vms)


def attempts_by_vm(g: GenerationResult) -> dict[str, list[float]]:
    """Simulated start time of every attempt of every VM, from the trace."""
    out: dict[str, list[float]] = {}
    for t, event, ids in g.trace.events:
        if event == "vm_attempt":
            out.setdefault(ids["vm"], []).append(t)
    return out


def used_mib(fleet: list[dict]) -> float:
    """Sum of used disk sizes over the fleet: size_gib * 1024 * used_fraction."""
    total = 0.0
    for t in fleet:
        per_vm = sum(d["size_gib"] * 1024 * d.get("used_fraction", 0.5) for d in t["disks"])
        total += per_vm * t["count"]
    return total


def assert_clean(g: GenerationResult) -> None:
    """The auditor is happy and nothing leaked."""
    s = g.summary
    assert s.audit.ok, s.audit.violations
    assert s.leaks.model_dump() == {"snapshots": 0, "checkpoints": 0, "mounts": 0, "redirected_holds": 0,
                                    "hot_adds": 0}


def changed(base: dict[str, Any], **changes: object) -> Scenario:
    """A scenario from a copy of `base` with each change applied: the keyword is the path with `__`
    between keys (list items by index), e.g. `fleet__0__count=4`, `backup__retries=0`."""
    d = copy.deepcopy(base)
    for path, value in changes.items():
        *head, last = path.split("__")
        at: Any = d
        for k in head:
            at = at[int(k)] if isinstance(at, list) else at[k]
        at[last] = value
    return scenario_from_dict(d)
