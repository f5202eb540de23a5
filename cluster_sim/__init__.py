"""cluster_sim: a simulator of Hyper-V failover clusters doing host-level VM backups.

`cluster_sim.run(scenario)` runs one scenario (a RunResult; `.to_pandas()`); `cluster_sim.sweep(study)`
runs a study and returns its runs table as a pandas DataFrame (`cluster_sim.sweep` is also the module
of studies: `cluster_sim.sweep.load_study`, `run_study`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cluster_sim.scenario import Scenario, ScenarioError, load_scenario
from cluster_sim.version import __version__

if TYPE_CHECKING:
    from cluster_sim import sweep
    from cluster_sim.results import RunResult
    from cluster_sim.simulation import run

__all__ = ["RunResult", "Scenario", "ScenarioError", "__version__", "load_scenario", "run", "sweep"]


def __getattr__(name: str) -> Any:
    # The simulation and the studies are imported on first use, so that commands that run nothing
    # (validate, report, --help, --version) start without them.
    if name == "run":
        from cluster_sim.simulation import run

        return run
    if name == "RunResult":
        from cluster_sim.results import RunResult

        return RunResult
    if name == "sweep":
        import importlib

        return importlib.import_module("cluster_sim.sweep")  # (a module you can call: see sweep.run_table)
    raise AttributeError(f"module 'cluster_sim' has no attribute {name!r}")
