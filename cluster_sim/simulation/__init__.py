"""Runs: one fresh cluster per generation, on the local or the Ray node backend.

assemble.py builds and runs one generation (run_generation) and reads its progress; summary.py sums
it up (summary.json, vms.csv, csvs.csv); executors.py runs a scenario's generations (run), one after
another or side by side in worker processes; ray_session.py starts or joins Ray for a run."""

from cluster_sim.simulation.assemble import (
    PROGRESS_INTERVAL_S,
    Progress,
    SimProgress,
    SimProgressFn,
    run_generation,
)
from cluster_sim.simulation.executors import local_workers, longest_first, run
from cluster_sim.simulation.ray_session import (
    RaySession,
    RayUnavailable,
    check_ray_address,
    package_runtime_env,
)

__all__ = [
    "PROGRESS_INTERVAL_S", "Progress", "RaySession", "RayUnavailable", "SimProgress",
    "SimProgressFn", "check_ray_address", "local_workers", "longest_first", "package_runtime_env", "run", "run_generation",
]
