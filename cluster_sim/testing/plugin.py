"""The pytest plugin of cluster_sim (entry point `pytest11: cluster_sim`): active in every pytest
run of an environment where cluster_sim is installed.

Fixtures:
- `cluster_sim_run(scenario=None, *, policy=None, policy_args=None, generations=None, seed=None,
  overrides=None, fault=None, backend=None)`: runs a scenario file, mapping or Scenario (default: a
  small generated cluster, `cluster_sim.testing.small_cluster()`) with a policy and returns its
  RunResult; the backend is `--cluster-sim-backend` (local, or ray: a local Ray instance, shut down
  at the end of the session) unless given;
- `cluster_sim_golden(result, name)`: compares each generation's summary.json with
  `<test folder>/golden/<name>/<generation>.json`; `--cluster-sim-update-golden` writes them.

Assertions and the fault matrix: `from cluster_sim.testing import assert_no_leaks, fault_matrix...`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cluster_sim", "cluster_sim: test your own backup logic")
    group.addoption("--cluster-sim-backend", choices=("local", "ray"), default="local",
                    help="backend of cluster_sim_run (default: local; ray: a local Ray instance)")
    group.addoption("--cluster-sim-update-golden", action="store_true", default=False,
                    help="cluster_sim_golden writes the golden files instead of comparing with them")


@pytest.fixture(scope="module")
def _cluster_sim_ray() -> Iterator[None]:
    """A local Ray instance for a test module's Ray runs (started on first use, shut down after the
    module, only if this plugin started it)."""
    from cluster_sim.simulation import RaySession

    session = RaySession(num_cpus=2)
    try:
        yield
    finally:
        session.close()


@pytest.fixture
def cluster_sim_run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Run a scenario with a policy: `cluster_sim_run(scenario=None, *, policy=..., policy_args=...,
    generations=..., seed=..., overrides={dotted.path: value}, fault=fault_case, backend=...)`."""
    from cluster_sim.testing.runs import run_cluster

    def run(scenario: Any = None, *, backend: str | None = None, **kw: Any) -> Any:
        be = backend or request.config.getoption("--cluster-sim-backend")
        if be == "ray":
            request.getfixturevalue("_cluster_sim_ray")
        return run_cluster(scenario, backend=be, **kw)

    return run


@pytest.fixture
def cluster_sim_golden(request: pytest.FixtureRequest) -> Callable[[Any, str], None]:
    """Compare a run's summaries with `<test folder>/golden/<name>/` (or write them with
    --cluster-sim-update-golden)."""
    from cluster_sim.testing.golden import compare_golden

    update = bool(request.config.getoption("--cluster-sim-update-golden"))
    base = Path(str(request.path)).parent / "golden"

    def check(result: Any, name: str) -> None:
        compare_golden(result, base / name, update=update)

    return check
