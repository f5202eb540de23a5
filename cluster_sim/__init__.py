"""cluster_sim: a simulator of Hyper-V failover clusters doing host-level VM backups."""

from cluster_sim.results import RunResult
from cluster_sim.scenario import Scenario, ScenarioError, load_scenario
from cluster_sim.simulation import run

__all__ = ["RunResult", "Scenario", "ScenarioError", "load_scenario", "run"]
__version__ = "0.1.0"
