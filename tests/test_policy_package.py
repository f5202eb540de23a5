"""An installed package ships a backup policy (issue 19): the test writes a package in a temporary
folder (its own pyproject.toml with an entry point in the `cluster_sim.policies` group),
pip-installs it into this environment, and a scenario names the policy by its entry-point name on
the local and Ray backends and in a small study on Ray; the package is uninstalled afterwards."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster_sim.testing import assert_every_vm_has_one_outcome, assert_no_leaks, small_cluster

DIST = "cluster-sim-test-extpolicy"
MODULE = "cs_test_extpolicy"
ENTRY = "test-biggest-first"
BIN = Path(sys.executable).parent

POLICY = '''
"""Biggest VMs first, at most `sets_in_flight` snapshot groups at once on the array."""
from pydantic import BaseModel, ConfigDict, Field

from cluster_sim.backup.policy import Policy


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sets_in_flight: int = Field(1, ge=1)


class BiggestFirst(Policy):
    Args = Args

    def on_job_start(self, view, cmd):
        cmd.note("started", policy="BiggestFirst", limit=self.args.sets_in_flight)

    def order(self, view, vms):
        return sorted(vms, key=lambda vm: (-view.disk_mib(vm), vm))

    def sets_in_flight(self, view):
        return self.args.sets_in_flight
'''

# 3 nodes, 6 VMs of 8, 16 or 24 GiB
CLUSTER = {**small_cluster(nodes=3, vms=6),
           "fleet": [{"template": f"vm{k}", "count": 2, "memory_gib": 2, "disks": [{"size_gib": 8 * k}]}
                     for k in (1, 2, 3)]}


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed_policy(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("extpolicy")
    (root / MODULE).mkdir()
    (root / MODULE / "__init__.py").write_text("", encoding="utf-8")
    (root / MODULE / "policies.py").write_text(POLICY, encoding="utf-8")
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{DIST}"
        version = "0.1.0"
        dependencies = []

        [project.entry-points."cluster_sim.policies"]
        {ENTRY} = "{MODULE}.policies:BiggestFirst"

        [tool.setuptools]
        packages = ["{MODULE}"]
        """), encoding="utf-8")
    _pip("install", "--no-deps", "--quiet", str(root))
    importlib.invalidate_caches()
    try:
        yield ENTRY
    finally:
        _pip("uninstall", "--yes", "--quiet", DIST)
        for name in [m for m in sys.modules if m == MODULE or m.startswith(MODULE + ".")]:
            del sys.modules[name]
        importlib.invalidate_caches()


@pytest.mark.slow
def test_an_installed_policy_runs_by_its_entry_point_name_on_local_and_ray(installed_policy, cluster_sim_run):
    from cluster_sim.results import summary_json

    gens = ["ws2012r2", "ws2016"]
    local = cluster_sim_run(CLUSTER, policy=installed_policy, generations=gens, backend="local")
    for g in local.generations:
        started = [ids for _t, ev, ids in g.trace.events if ev == "policy_started"]
        assert started == [{"policy": "BiggestFirst", "limit": 1}]
    # ws2012r2: each node works through its own VMs biggest first (vmK has a disk of 8K GiB)
    attempts = [ids for _t, ev, ids in local.by_generation()["ws2012r2"].trace.events if ev == "vm_attempt"]
    for node in ("node-1", "node-2", "node-3"):
        sizes = [int(a["vm"][2]) for a in attempts if a["node"] == node and a["attempt"] == 1]
        assert len(sizes) == 2 and sizes == sorted(sizes, reverse=True)
    ws2012r2 = local.by_generation()["ws2012r2"].summary
    assert ws2012r2.peak_pending_snapshots == 1  # one group at a time on the array
    assert_no_leaks(local)
    assert_every_vm_has_one_outcome(local)
    ray = cluster_sim_run(CLUSTER, policy=installed_policy, generations=gens, backend="ray")
    assert [summary_json(g.summary) for g in ray.generations] == [summary_json(g.summary) for g in local.generations]


@pytest.mark.slow
def test_a_study_on_ray_runs_the_installed_policy_with_each_points_arguments(installed_policy, tmp_path,
                                                                             cluster_sim_run):
    import yaml

    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({**CLUSTER, "backup": {
        **CLUSTER["backup"], "policy": installed_policy, "generations": ["ws2012r2"]}}), encoding="utf-8")
    (tmp_path / "study.yaml").write_text(textwrap.dedent("""
        study: extpolicy
        scenario: cluster.yaml
        grid:
          backup.policy_args.sets_in_flight: [1, 3]
        seeds: 1
        metrics: [backup_window_s, peak_pending_snapshots]
        """), encoding="utf-8")
    out = tmp_path / "out"
    done = subprocess.run([str(BIN / "cluster-sim"), "sweep", str(tmp_path / "study.yaml"), "--out", str(out),
                           "--num-cpus", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = sorted(pq.read_table(out / "runs.parquet").to_pylist(),
                  key=lambda r: r["backup.policy_args.sets_in_flight"])
    assert [r["error"] or "" for r in rows] == ["", ""]
    # the Ray workers ran the policy with each point's arguments: the same numbers as this process
    for r in rows:
        here = cluster_sim_run(CLUSTER, policy=installed_policy, generations=["ws2012r2"],
                               policy_args={"sets_in_flight": r["backup.policy_args.sets_in_flight"]})
        s = here.generations[0].summary
        assert (r["backup_window_s"], r["peak_pending_snapshots"]) == (s.backup_window_s, s.peak_pending_snapshots)
    assert rows[0]["backup_window_s"] > rows[1]["backup_window_s"]  # one group at a time takes longer


def test_a_misspelt_entry_point_name_suggests_the_installed_one(installed_policy):
    from cluster_sim.scenario import ScenarioError
    from cluster_sim.testing.runs import scenario_for

    with pytest.raises(ScenarioError, match="did you mean 'test-biggest-first'"):
        scenario_for(CLUSTER, policy="test-bigest-first")
