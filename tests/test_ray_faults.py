"""Faults of the Ray machinery are not faults of the scenario (issue 15, items 1-2).

A node actor's worker process killed for real (SIGKILL, as an OOM kill would) or stopped (SIGSTOP, a
hung process) in the middle of `run --backend ray` is rebuilt from its operation log: the results are
byte-identical to `--backend local` and no node failure is reported; if it cannot be rebuilt the run
stops with exit code 3 and writes nothing. A later generation never inherits a dead actor. A Ray
address that does not answer, or a head that wants a token we do not have, is refused at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from chaos import run_killing
from proc_helpers import gone, pids_where
from ray_helpers import KillingBackend, actor_pid
from typer.testing import CliRunner

import cluster_sim
from cluster_sim import simulation
from cluster_sim.cli import app
from cluster_sim.cluster.nodes import BackendFailure, RayBackend, ray_backend
from cluster_sim.results import summary_json
from cluster_sim.scenario import scenario_from_dict
from cluster_sim.scenario.placement import node_name
from cluster_sim.simulation import executors

pytestmark = pytest.mark.slow
runner = CliRunner()


def scenario(**run) -> cluster_sim.Scenario:  # type: ignore[no-untyped-def]
    """3 nodes, 15 VMs, two generations, node-3 crashes (a scheduled crash: a simulated fault) and
    recovers, so the backend also kills and restarts an actor on purpose."""
    return scenario_from_dict({
        "name": "ray-faults",
        "seed": 11,
        "cluster": {"nodes": 3, "node_poll_interval_s": 60.0},
        "storage": {"csvs": 3},
        "fleet": [{"template": "win", "count": 12, "disks": [{"size_gib": 4}, {"size_gib": 6}]},
                  {"template": "lnx", "count": 3, "guest_os": "linux", "disks": [{"size_gib": 4}]}],
        "backup": {"generations": ["ws2012r2", "ws2016"], "retry_wait_s": 60},
        "events": [{"kind": "crash_node", "at_s": 45.0, "node": "node-3"},
                   {"kind": "recover_node", "at_s": 400.0, "node": "node-3"}],
        "run": {"until_s": 20000, **run},
    })


@pytest.fixture(scope="module")
def local_run():  # type: ignore[no-untyped-def]
    return cluster_sim.run(scenario(), backend="local")


def run_with(be: RayBackend, sc: cluster_sim.Scenario) -> list:  # type: ignore[type-arg]
    out = []
    try:
        for gen in sc.backup.generations:
            be.revive_all()
            out.append(simulation.run_generation(sc, gen, be))
    finally:
        be.close()
    return out


def assert_same_as_local(gens, local_run) -> None:  # type: ignore[no-untyped-def]
    for a, b in zip(local_run.generations, gens, strict=True):
        assert summary_json(a.summary) == summary_json(b.summary)
        assert [r.model_dump() for r in a.vms] == [r.model_dump() for r in b.vms]
        # only the scheduled crash is a node failure; the killed actor is not
        assert [(f.node, f.how) for f in b.summary.node_failures] == [("node-3", "crash")]


@pytest.mark.parametrize("at_send", [1, 3, 5])  # node-1 gets 5 batches per generation: first, middle, last
def test_a_node_actor_killed_for_real_mid_run_is_rebuilt_and_the_results_equal_local(ray_session, local_run,
                                                                                      at_send) -> None:
    names = [node_name(i) for i in range(3)]
    be = KillingBackend(names, victim="node-1", at_send=at_send)
    gens = run_with(be, scenario())
    assert len(be.hit) == 2  # once in each generation
    assert all(gone(pid, within_s=30) for pid in be.hit)
    assert_same_as_local(gens, local_run)
    rebuilt = [n for n in be.notes if n.startswith("node-1: Ray actor lost")]
    assert len(rebuilt) == 2, be.notes  # found by the batch it was killed before, in each generation


def test_a_stopped_actor_is_treated_as_dead_after_the_call_deadline_and_rebuilt(ray_session, local_run) -> None:
    names = [node_name(i) for i in range(3)]
    be = KillingBackend(names, victim="node-2", at_send=3, sig=signal.SIGSTOP, call_timeout_s=3.0)
    t0 = time.monotonic()
    try:
        gens = run_with(be, scenario())
    finally:
        for pid in be.hit:  # whatever Ray did with them, nothing we stopped stays behind
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
    assert len(be.hit) == 2
    assert_same_as_local(gens, local_run)
    assert any("no answer within" in n for n in be.notes), be.notes
    # it waited for the deadline twice (once per generation), not for ever: generous bound for a busy machine
    assert time.monotonic() - t0 < 600


def test_a_new_actor_that_dies_before_its_first_answer_is_replaced(ray_session, local_run) -> None:
    class DiesAtBirth(RayBackend):
        born = 0

        def restart(self, node: str) -> None:
            super().restart(node)
            if node == "node-2" and not self.born:  # the first node-2 actor dies as it starts
                self.born = 1
                self._ray.kill(self.actors[node], no_restart=True)

    be = DiesAtBirth([node_name(i) for i in range(3)])
    assert be.notes and be.notes[0].startswith("node-2: new Ray actor lost before its first answer")
    assert_same_as_local(run_with(be, scenario()), local_run)


def test_an_actor_that_keeps_dying_stops_the_run_with_backend_failure(ray_session, monkeypatch) -> None:
    monkeypatch.setattr(ray_backend, "MAX_REBUILDS_PER_NODE", 0)
    be = KillingBackend([node_name(i) for i in range(3)], victim="node-2", at_send=2)
    with pytest.raises(BackendFailure, match="the Ray actor of node-2 failed 1 times"):
        run_with(be, scenario())


def test_a_later_generation_never_inherits_an_actor_that_died_between_generations(ray_session, local_run) -> None:
    be = RayBackend([node_name(i) for i in range(3)])
    sc = scenario()
    try:
        be.revive_all()
        first = simulation.run_generation(sc, "ws2012r2", be)
        pid = actor_pid(be, "node-1")
        os.kill(pid, signal.SIGKILL)
        assert gone(pid, within_s=30)
        be.revive_all()
        second = simulation.run_generation(sc, "ws2016", be)
    finally:
        be.close()
    assert_same_as_local([first, second], local_run)
    assert any(n.startswith("node-1: Ray actor lost between generations") for n in be.notes), be.notes


def test_an_unnoticed_actor_death_of_the_test_hook_is_not_inherited_by_the_next_generation(ray_session) -> None:
    # run_killing (tests/chaos.py: "an actor dies on its own") kills node-2 in every generation at 100 s;
    # revive_all used to restart only actors the backend killed itself, so the second generation found
    # node-2 dead at its first poll instead of at the second poll after 100 s, unlike --backend local
    sc = scenario(ray_num_cpus=2)
    kill = [("node-2", 100.0)]
    ray_ = run_killing(sc, kill, backend="ray")
    loc = run_killing(sc, kill, backend="local")
    for a, b in zip(loc.generations, ray_.generations, strict=True):
        assert summary_json(a.summary) == summary_json(b.summary)
        assert ("node-2", "actor_died") in [(f.node, f.how) for f in b.summary.node_failures]


# ---- the CLI: exit 3, nothing written; a rebuild is a warning, not a result ------------------------------
def _cli_with_killer(monkeypatch, **kw) -> None:  # type: ignore[no-untyped-def]
    def make(names, call_timeout_s, start_timeout_s):  # type: ignore[no-untyped-def]
        return KillingBackend(names, call_timeout_s=call_timeout_s, start_timeout_s=start_timeout_s, **kw)

    monkeypatch.setattr(executors, "RayBackend", make)


def _scenario_file(tmp_path: Path) -> Path:
    import yaml

    f = tmp_path / "sc.yaml"
    f.write_text(yaml.safe_dump(scenario().model_dump(mode="json")))
    return f


def test_cli_run_with_an_actor_killed_mid_run_exits_0_with_local_results_and_a_warning(ray_session, local_run,
                                                                                       monkeypatch, tmp_path) -> None:
    _cli_with_killer(monkeypatch, victim="node-1", at_send=5)
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(_scenario_file(tmp_path)), "--backend", "ray", "--out", str(out),
                              "--no-report"])
    assert res.exit_code == 0, res.output
    assert "warning: node-1: Ray actor lost" in " ".join(res.stderr.split())
    for g in local_run.generations:
        got = (out / g.summary.generation / "summary.json").read_text()
        assert got == summary_json(g.summary)


def test_cli_run_whose_actor_cannot_be_rebuilt_exits_3_and_writes_nothing(ray_session, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(ray_backend, "MAX_REBUILDS_PER_NODE", 0)
    _cli_with_killer(monkeypatch, victim="node-2", at_send=2)
    out = tmp_path / "out"
    f = _scenario_file(tmp_path)
    res = runner.invoke(app, ["run", str(f), "--backend", "ray", "--out", str(out), "--no-report"])
    assert res.exit_code == 3, res.output
    err = " ".join(res.stderr.split())
    assert "error: the Ray node backend failed, no results written: the Ray actor of node-2 failed" in err
    assert "use --backend local" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sc.yaml"]  # no results, no scratch folder


# ---- addresses: fast refusal, and what to do about a token ------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_with_a_ray_address_nobody_answers_on_exits_2_at_once(tmp_path) -> None:
    port = _free_port()
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = runner.invoke(app, ["run", str(_scenario_file(tmp_path)), "--backend", "ray",
                              "--ray-address", f"127.0.0.1:{port}", "--out", str(out)])
    assert res.exit_code == 2, res.output
    # (--ray-address is an alias of --address, the name every command uses)
    assert f"error: --address 127.0.0.1:{port}: cannot connect to 127.0.0.1:{port}" in " ".join(res.stderr.split())
    assert not out.exists()
    assert time.monotonic() - t0 < 60  # (ray.init alone retries for minutes)


@pytest.fixture()
def token_head(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A `ray start --head` with token authentication on a free port; its processes are stopped by PID."""
    port = _free_port()
    temp = Path("/tmp") / f"r15tok-{uuid.uuid4().hex[:6]}"  # short: Ray's socket paths have a length limit
    token = uuid.uuid4().hex * 2
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    ray_bin = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                    f"--temp-dir={temp}", "--disable-usage-stats"], env=env, check=True, capture_output=True,
                   timeout=180)
    try:
        yield port, token
    finally:
        pids = pids_where(cmdline_has=str(temp))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


def test_run_and_sweep_explain_a_head_that_wants_an_authentication_token(token_head, tmp_path, monkeypatch) -> None:
    port, _token = token_head
    ip = socket.gethostbyname(socket.gethostname())
    address = f"{ip}:{port}"
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    res = runner.invoke(app, ["run", str(_scenario_file(tmp_path)), "--backend", "ray", "--ray-address", address,
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    err = " ".join(res.stderr.split())
    assert f"error: --address {address}: the Ray cluster at {address} uses token authentication" in err
    assert "Set RAY_AUTH_MODE=token and give the cluster's token: RAY_AUTH_TOKEN=<token>" in err
    study = tmp_path / "study.yaml"
    study.write_text(f"scenario: {_scenario_file(tmp_path).name}\ngrid: {{backup.retries: [0, 1]}}\n")
    res = runner.invoke(app, ["sweep", str(study), "--address", address, "--out", str(tmp_path / "study")])
    assert res.exit_code == 2, res.output
    assert f"--address {address}: the Ray cluster at {address} uses token authentication" in " ".join(res.stderr.split())
    assert not (tmp_path / "study").exists()
