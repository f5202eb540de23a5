"""Running a scenario, or a small generated cluster, with a policy (the `cluster_sim_run` fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster_sim.scenario import GENERATIONS, Scenario, apply_overrides, load_scenario, scenario_from_dict

if TYPE_CHECKING:
    from cluster_sim.results import RunResult
    from cluster_sim.testing.faults import FaultCase

ScenarioLike = str | Path | dict[str, Any] | Scenario


def small_cluster(nodes: int = 3, vms: int = 12, csvs: int | None = None, disk_gib: float = 4.0,
                  seed: int = 1, name: str = "small-cluster", events: list[dict[str, Any]] | None = None,
                  **backup: Any) -> dict[str, Any]:
    """A small cluster as a scenario mapping: `nodes` nodes, `csvs` CSVs (default: one per node),
    `vms` Windows VMs with one `disk_gib` disk each placed round robin, every generation, the
    defaults of every other field; `backup` keyword arguments are `backup` fields (e.g. retries=1).
    A generation of it runs in well under a second on the local backend."""
    return {
        "name": name,
        "seed": seed,
        "cluster": {"nodes": nodes},
        "storage": {"csvs": csvs if csvs is not None else nodes},
        "fleet": [{"template": "win", "count": vms, "memory_gib": 2, "disks": [{"size_gib": disk_gib}]}],
        "placement": "round_robin",
        "backup": {"generations": list(GENERATIONS), **backup},
        "events": list(events or []),
        "run": {"backend": "local", "until_s": 7 * 86400},
    }


def policy_ref(policy: str | type | None) -> str | None:
    """A policy class as the `module:Class` reference a scenario names it by."""
    if policy is None or isinstance(policy, str):
        return policy
    return f"{policy.__module__}:{policy.__qualname__}"


def scenario_for(scenario: ScenarioLike | None = None, *, policy: str | type | None = None,
                 policy_args: dict[str, Any] | None = None, generations: list[str] | None = None,
                 seed: int | None = None, overrides: dict[str, Any] | None = None) -> Scenario:
    """The scenario to run: a file, a mapping, a Scenario or (None) `small_cluster()`, with the
    policy, its arguments, the generations, the seed and any other dotted-path `overrides`
    ({"backup.retries": 1}). Problems raise ScenarioError, as the command line reports them."""
    label = None
    if scenario is None:
        data: dict[str, Any] = small_cluster()
    elif isinstance(scenario, Scenario):
        data = scenario.model_dump(mode="json")
    elif isinstance(scenario, dict):
        data = scenario
    else:
        label = str(scenario)
        data = load_scenario(Path(scenario)).model_dump(mode="json")
    sets: list[tuple[str, Any]] = list((overrides or {}).items())
    if policy is not None:
        sets.append(("backup.policy", policy_ref(policy)))
    if policy_args is not None:
        sets.append(("backup.policy_args", dict(policy_args)))
    if generations is not None:
        sets.append(("backup.generations", list(generations)))
    if seed is not None:
        sets.append(("seed", seed))
    return scenario_from_dict(apply_overrides(data, sets, label), label)


def run_cluster(scenario: ScenarioLike | None = None, *, policy: str | type | None = None,
                policy_args: dict[str, Any] | None = None, generations: list[str] | None = None,
                backend: str = "local", seed: int | None = None, overrides: dict[str, Any] | None = None,
                fault: FaultCase | None = None) -> RunResult:
    """Run the scenario (see `scenario_for`) on the local or Ray backend, one generation after the
    other in this process. With `fault` (a case of `fault_matrix`), only the case's generation runs,
    with the case's fault injected in its phase."""
    from cluster_sim.simulation import run

    sc = scenario_for(scenario, policy=policy, policy_args=policy_args, generations=generations, seed=seed,
                      overrides=overrides)
    if fault is not None:
        sc = fault.inject(sc)
    return run(sc, backend=backend, workers=1)
