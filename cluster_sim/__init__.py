"""cluster_sim: a simulator of Hyper-V failover clusters doing host-level VM backups."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cluster_sim.scenario import Scenario, ScenarioError, load_scenario

if TYPE_CHECKING:
    from cluster_sim.results import RunResult
    from cluster_sim.simulation import run

__all__ = ["RunResult", "Scenario", "ScenarioError", "load_scenario", "run"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The simulation (numpy, the cluster, backup and data models) is imported on first use, so
    # that commands that run nothing (validate, report, --help) start without it.
    if name == "run":
        from cluster_sim.simulation import run

        return run
    if name == "RunResult":
        from cluster_sim.results import RunResult

        return RunResult
    raise AttributeError(f"module 'cluster_sim' has no attribute {name!r}")
