"""Studies and plans on a real Ray cluster whose nodes have Ray and the dependencies but NOT
cluster_sim: the package travels with the job (runtime_env py_modules).

The fixture makes a second Python environment (a venv whose site-packages holds a .pth line naming
this environment's site-packages: the dependencies are importable, cluster_sim is not, because .pth
files inside a directory named that way are not processed, so the editable install stays out),
starts a head and a worker node from it with `ray start --block` (1 CPU each, free ports, temp dirs
of our own, a neutral working directory), and stops exactly those processes at the end, by PID.
The drivers (`cluster-sim sweep` / `plan`) run from a neutral working directory too: Ray puts the
driver's working directory on the workers' sys.path, which from the repository would hide a missing
package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from plan_helpers import make_plan, write_tiny

from cluster_sim.plan import load_plan, run_plan
from cluster_sim.sweep import SUMMARY_COLUMNS, load_study, run_study

CLUSTER_SIM = Path(sys.executable).parent / "cluster-sim"
START_TIMEOUT_S = 180
STUDY = {"study": "cluster-study", "scenario": "sc/tiny.yaml", "seeds": 3, "generations": ["ws2012r2"],
         "grid": {"backup.vms_per_snapshot": [1, 3], "backup.concurrent_vms_per_node": [1, 2]}}
# Asked of the cluster by a driver without the runtime_env: can a worker import cluster_sim?
PROBE = """\
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + 120
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
@ray.remote(num_cpus=1)
def probe():
    try:
        import cluster_sim  # noqa: F401
        return "imported"
    except ImportError as exc:
        return f"ImportError: {exc}"
answers = ray.get([probe.remote() for _ in range(4)])
print(json.dumps({"nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]), "answers": answers}))
"""


@dataclass
class BareCluster:
    address: str
    python: Path  # the second environment's interpreter
    cwd: Path  # a neutral working directory
    env: dict[str, str]  # for drivers: no RAY_ADDRESS, no PYTHONPATH, no token authentication
    node_ids: list[str]
    probe_answers: list[str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _node_ports(head: bool) -> list[str]:
    # every port Ray would otherwise take at its fixed default (others may run Ray on this machine)
    names = ["node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"]
    return [f"--{n}={_free_port()}" for n in names]


def _ours(sessions: set[int], marker: str) -> list[int]:
    """PIDs of processes in the sessions we started, or whose command line names our temp folder."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            sid = int(stat.rsplit(")", 1)[1].split()[3])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        state = stat.rsplit(")", 1)[1].split()[0]
        if state != "Z" and (sid in sessions or marker in cmd):
            pids.append(int(d.name))
    return pids


def _wait_for_line(proc: subprocess.Popen, log: Path, line: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if line in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"ray start did not report {line!r}:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def bare_cluster():
    root = Path(tempfile.mkdtemp(prefix="csr", dir="/tmp"))  # short: Ray's socket paths live under it
    procs: list[subprocess.Popen] = []
    try:
        venv = root / "env"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        site = next((venv / "lib").glob("python*/site-packages"))
        (site / "cluster-sim-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        python = venv / "bin" / "python"
        cwd = root / "cwd"
        cwd.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
        env["RAY_AUTH_MODE"] = "disabled"  # a throw-away test cluster: no token files involved

        def start(name: str, args: list[str]) -> subprocess.Popen:
            log = root / f"{name}.log"
            cmd = [str(python), "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus=1",
                   f"--temp-dir={root / name}", "--disable-usage-stats", *args]
            with open(log, "w") as fh:
                p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            procs.append(p)
            _wait_for_line(p, log, "Ray runtime started")
            return p

        import ray._private.services as services

        ip = services.get_node_ip_address()
        port = _free_port()
        address = f"{ip}:{port}"
        start("head", ["--head", f"--port={port}", "--include-dashboard=false", f"--node-ip-address={ip}",
                       *_node_ports(True)])
        start("worker", [f"--address={address}", f"--node-ip-address={ip}", *_node_ports(False)])
        (cwd / "probe.py").write_text(PROBE)
        res = subprocess.run([sys.executable, "probe.py", address], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        probe = json.loads(res.stdout.strip().splitlines()[-1])
        yield BareCluster(address, python, cwd, env, probe["nodes"], probe["answers"])
    finally:
        for p in reversed(procs):  # the worker node first, then the head
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=30)
        deadline = time.monotonic() + 30
        while (left := _ours({p.pid for p in procs}, str(root))) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:  # only what we started and Ray left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_second_environment_has_the_dependencies_but_not_cluster_sim(bare_cluster):
    c = bare_cluster
    no = subprocess.run([str(c.python), "-c", "import cluster_sim"], cwd=c.cwd, capture_output=True, text=True)
    assert no.returncode != 0 and "No module named 'cluster_sim'" in no.stderr
    yes = subprocess.run([str(c.python), "-c", "import ray, optuna, simpy, pydantic, pyarrow, yaml"],
                         cwd=c.cwd, capture_output=True, text=True)
    assert yes.returncode == 0, yes.stderr
    # the cluster: two nodes, whose workers cannot import cluster_sim without the job's runtime_env
    assert len(c.node_ids) == 2
    assert c.probe_answers == ["ImportError: No module named 'cluster_sim'"] * 4


@pytest.mark.slow
def test_study_on_a_cluster_without_cluster_sim_runs_on_both_nodes_and_equals_a_local_run(bare_cluster, tmp_path):
    c = bare_cluster
    work = c.cwd / "study"
    # runs of 120 VMs, 12 of them: long enough that Ray spreads them over both 1-CPU nodes even on a
    # busy machine (the worker node sets up the job's runtime_env before its first run; with runs of
    # 30 VMs the head once finished all 12 first)
    write_tiny(work, count=120)
    study = work / "study.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    env = {**c.env, "RAY_ADDRESS": c.address}  # the address from the environment, as Ray's own tools take it
    res = subprocess.run([str(CLUSTER_SIM), "sweep", "study.yaml", "--out", "out"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert f"on Ray at {c.address}" in " ".join(res.stdout.split())
    rows = {r["run_id"]: r for r in pq.read_table(work / "out" / "runs.parquet").to_pylist()}
    assert len(rows) == 12 and all(r["error"] is None for r in rows.values())
    assert {r["node_id"] for r in rows.values()} == set(c.node_ids)
    local = run_study(load_study(study), tmp_path / "local", executor="serial", outputs=False)
    numeric = [n for n, k in SUMMARY_COLUMNS if k in ("int", "float")]
    assert {r["run_id"]: {n: r[n] for n in numeric} for r in local.rows} == \
        {k: {n: r[n] for n in numeric} for k, r in rows.items()}


@pytest.mark.slow
def test_plan_on_a_cluster_without_cluster_sim_runs_on_both_nodes_and_equals_a_local_run(bare_cluster, tmp_path):
    c = bare_cluster
    work = c.cwd / "plan"
    plan = make_plan(work, trials=5)
    res = subprocess.run([str(CLUSTER_SIM), "plan", "plan.yaml", "--address", c.address, "--out", "out"],
                         cwd=work, env=c.env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert f"on Ray at {c.address}" in " ".join(res.stdout.split())
    runs = pq.read_table(work / "out" / "runs.parquet").to_pylist()
    trial_runs = [r for r in runs if r["role"] == "trial"]
    assert len(trial_runs) == 5 * 2 and all(r["error"] is None for r in runs)
    # each trial holds a CPU on each node: its first seed runs in the trial, the second beside it
    assert {r["node_id"] for r in trial_runs} == set(c.node_ids)
    assert len({r["worker"] for r in trial_runs}) >= 2
    local = run_plan(load_plan(plan), tmp_path / "local", num_cpus=2)
    remote = pq.read_table(work / "out" / "trials.parquet").to_pylist()
    numeric = [n for n, k in SUMMARY_COLUMNS if k in ("int", "float")]
    keys = ["trial", "feasible", "backup.vms_per_snapshot", "backup.concurrent_vms_per_node",
            "backup.copy_stream_mib_s", *numeric]
    assert [{k: r[k] for k in keys} for r in remote] == \
        [{k: r[k] for k in keys} for r in pq.read_table(tmp_path / "local" / "trials.parquet").to_pylist()]
    assert local.summary["best"]["trial"] == json.loads((work / "out" / "plan.json").read_text())["best"]["trial"]
