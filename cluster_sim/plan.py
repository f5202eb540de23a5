"""`cluster_sim.plan`: the plan advisor's API (`load_plan`, `run_plan`, ...); the code lives in the
package `cluster_sim.studies.plan` (see its docstring for the plan file and the modules)."""

from cluster_sim.studies.plan import *  # noqa: F403 - this module is the plans' API
from cluster_sim.studies.plan import __all__  # noqa: F401
