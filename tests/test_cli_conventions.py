"""CLI conventions (issue 16): --version, shell completion, choices shown in --help, one --address
(with $RAY_ADDRESS) on every command that joins a Ray cluster, data-first output (--json, -q), and
mistakes made with an option blamed on that option, not on the scenario file."""

from __future__ import annotations

import csv
import json
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster_sim import simulation as sim
from cluster_sim.cli import app, sim_progress_text
from cluster_sim.simulation import SimProgress

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small-4node.yaml"
runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_simulation(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def refuse(*_a, **_k):  # type: ignore[no-untyped-def]
        raise AssertionError("simulated although the command line was wrong")

    monkeypatch.setattr(sim, "run", refuse)


def test_version_prints_the_package_and_simulator_versions() -> None:
    from cluster_sim.version import package_version, sim_version

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.stdout == f"cluster-sim {package_version()} (simulator {sim_version()})\n"


def test_shell_completion_is_offered_and_completes_generations() -> None:
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout
    from cluster_sim.cli import _complete_generation

    assert _complete_generation("ws2012") == ["ws2012", "ws2012r2"]


def test_help_shows_the_choices_of_backend_and_generation() -> None:
    res = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    text = flat(res.stdout)
    assert "<local|ray>" in text
    assert "[ws2008r2|ws2012|ws2012r2|ws2016]" in text
    assert "--address,--ray-address" in text and "env var: RAY_ADDRESS" in text


# ----------------------------------------------------------------------------------------------
# mistakes made with an option are the option's
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["--seed", "-1"], "error: --seed -1 (on {file}): seed: Input should be greater than or equal to 0 (got -1)"),
    (["--seed", str(2**63)], "error: --seed 9223372036854775808 (on {file}): seed: Input should be less than or "
                             "equal to 9223372036854775807 (got 9223372036854775808)"),
    (["--workers", "-2"], "error: --workers -2 (on {file}): run.workers: Input should be greater than or equal to 0 "
                          "(got -2)"),
    (["-g", "ws2019"], "error: -g 'ws2019': not a generation; did you mean 'ws2016'? (choose from ws2008r2, ws2012, "
                       "ws2012r2, ws2016)"),
    (["-g", "ws2016", "-g", "ws2016"], "error: -g ws2016: given twice"),
    (["--address", "10.0.0.1:6379"], "error: --address 10.0.0.1:6379: the run uses the local node backend "
                                     "(run.backend in the scenario), which starts no Ray; add --backend ray to run "
                                     "the nodes on that Ray cluster"),
    (["--ray-address", "10.0.0.1:6379", "--backend", "local"],
     "error: --address 10.0.0.1:6379: the run uses the local node backend (run.backend in the scenario), which "
     "starts no Ray; add --backend ray to run the nodes on that Ray cluster"),
], ids=["seed-negative", "seed-too-large", "workers", "generation", "generation-twice", "address-local",
        "ray-address-local"])
def test_an_options_mistake_is_blamed_on_the_option_with_its_value(args, message, tmp_path, monkeypatch) -> None:
    no_simulation(monkeypatch)
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(SMALL), "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert flat(res.stderr) == message.format(file=SMALL)
    assert not out.exists() and res.stdout == ""


def test_an_unknown_backend_is_refused_by_the_option_naming_the_choices(tmp_path, monkeypatch) -> None:
    no_simulation(monkeypatch)
    res = runner.invoke(app, ["run", str(SMALL), "--out", str(tmp_path / "out"), "--backend", "raay"])
    assert res.exit_code == 2
    text = flat(res.output.replace("│", " "))
    assert "Invalid value for '--backend'" in text and "'raay' is not one of 'local', 'ray'" in text
    assert str(SMALL) not in text


def test_ray_address_in_the_environment_is_left_alone_by_a_local_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")  # (nobody there: joining would fail)
    res = runner.invoke(app, ["run", str(SMALL), "--out", str(tmp_path / "out"), "-g", "ws2016", "--no-report", "-q"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["backend"] == "local"


def test_ray_address_in_the_environment_is_joined_by_a_ray_run_and_named_when_it_fails(tmp_path, monkeypatch) -> None:
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    t0 = time.monotonic()
    res = runner.invoke(app, ["run", str(SMALL), "--out", str(tmp_path / "out"), "-g", "ws2016", "--backend", "ray"])
    assert res.exit_code == 2, res.output
    assert flat(res.stderr).startswith(f"error: $RAY_ADDRESS 127.0.0.1:{port}: cannot connect to 127.0.0.1:{port}")
    assert not (tmp_path / "out").exists()
    assert time.monotonic() - t0 < 60  # refused at once (ray.init alone retries for minutes)


def test_address_on_the_command_line_wins_over_the_environment(tmp_path, monkeypatch) -> None:
    env_port, cli_port = free_port(), free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{env_port}")
    res = runner.invoke(app, ["run", str(SMALL), "--out", str(tmp_path / "out"), "--backend", "ray",
                              "--address", f"127.0.0.1:{cli_port}"])
    assert res.exit_code == 2, res.output
    assert flat(res.stderr).startswith(f"error: --address 127.0.0.1:{cli_port}: cannot connect")


@pytest.mark.parametrize("command", ["sweep", "plan"])
def test_every_command_that_joins_ray_takes_address_from_the_environment_in_its_help(command) -> None:
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    text = flat(res.stdout)
    assert "--address" in text and "env var: RAY_ADDRESS" in text


# ----------------------------------------------------------------------------------------------
# data first: --json and -q
# ----------------------------------------------------------------------------------------------
def test_json_prints_one_document_with_the_comparison_rows_and_summaries(tmp_path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(SMALL), "--out", str(out), "-g", "ws2016", "-g", "ws2012r2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # stdout holds the document and nothing else
    assert doc["out"] == str(out)
    assert doc["run"] == json.loads((out / "run.json").read_text())
    assert list(doc["summaries"]) == ["ws2016", "ws2012r2"]
    for gen, summary in doc["summaries"].items():
        assert summary == json.loads((out / gen / "summary.json").read_text())
    with open(out / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [list(r) for r in doc["comparison"]] == [list(r) for r in rows]  # the same columns, units in names
    for mine, theirs in zip(doc["comparison"], rows, strict=True):
        assert mine["generation"] == theirs["generation"]
        assert mine["hw snapshots"] == int(theirs["hw snapshots"]) and isinstance(mine["hw snapshots"], int)
        assert mine["window (h)"] == pytest.approx(float(theirs["window (h)"]), abs=1e-6)
        assert mine["audit violations"] == 0
    assert doc["comparison"][0]["hw snapshots"] == doc["summaries"]["ws2016"]["hw_snapshots_created"]
    assert (out / "report.html").is_file()  # (the report is still drawn; its line is not printed)


def test_quiet_prints_nothing_on_success(tmp_path) -> None:
    res = runner.invoke(app, ["run", str(SMALL), "--out", str(tmp_path / "out"), "-g", "ws2016", "-q"])
    assert res.exit_code == 0, res.output
    assert (res.stdout, res.stderr) == ("", "")
    assert (tmp_path / "out" / "ws2016" / "summary.json").is_file()


def test_quiet_still_prints_errors(tmp_path) -> None:
    res = runner.invoke(app, ["run", str(SMALL), "--out", str(tmp_path / "out"), "-q", "--seed", "-3"])
    assert res.exit_code == 2 and res.stdout == ""
    assert flat(res.stderr).startswith("error: --seed -3")


# ----------------------------------------------------------------------------------------------
# progress in simulated time
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("where", "text"), [
    (SimProgress(22320.0, 412, 800, 0, 1, "full", 57600.0), "6.2 / ~16 h simulated, 412/800 VMs done"),
    (SimProgress(61200.0, 799, 800, 0, 1, "full", 57600.0), "17 h simulated, 799/800 VMs done"),
    (SimProgress(90000.0, 10, 800, 1, 4, "incremental", None), "job 2/4 (incremental): 25 h simulated, 10/800 VMs done"),
    (SimProgress(30.0, 0, 0, 0, 1, "", None), "0.0 h simulated, backup not started"),
    (SimProgress(1800.0, 0, 0, 0, 0, "", 3600.0), "0.5 / 1.0 h simulated"),
], ids=["full", "past-the-guess", "schedule", "before-the-job", "steady"])
def test_progress_says_where_a_generation_is_in_simulated_time(where, text) -> None:
    assert sim_progress_text(where) == text


def test_a_ray_address_from_the_scenario_file_is_named_as_such_when_it_fails(tmp_path, monkeypatch) -> None:
    port, env_port = free_port(), free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{env_port}")  # (the file's wins over the environment)
    res = runner.invoke(app, ["run", str(SMALL), "--out", str(tmp_path / "out"), "--backend", "ray",
                              "--set", f"run.ray_address='127.0.0.1:{port}'"])
    assert res.exit_code == 2, res.output
    assert flat(res.stderr).startswith(f"error: run.ray_address 127.0.0.1:{port} (in {SMALL}): cannot connect to "
                                       f"127.0.0.1:{port}")
