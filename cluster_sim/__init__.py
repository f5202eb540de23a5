"""cluster_sim: a simulator of Hyper-V failover clusters doing host-level VM backups.

`cluster_sim.run(scenario)` runs one scenario (a RunResult; `.to_pandas()`); `cluster_sim.sweep(study)`
runs a study and returns its runs table as a pandas DataFrame (`cluster_sim.sweep` is also the module
of studies: `cluster_sim.sweep.load_study`, `run_study`)."""

from cluster_sim import sweep
from cluster_sim.results import RunResult
from cluster_sim.scenario import Scenario, ScenarioError, load_scenario
from cluster_sim.simulation import run

__all__ = ["RunResult", "Scenario", "ScenarioError", "load_scenario", "run", "sweep"]
__version__ = "0.1.0"
