"""Fixtures shared by several test modules (pytest finds them here; helpers that are plain
functions live in the *_helpers.py modules)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
TEN = ROOT / "scenarios" / "10vm-2node.yaml"


@pytest.fixture(scope="module")
def ray_session():  # type: ignore[no-untyped-def]
    """A local Ray instance with 2 CPUs for the tests of one module, shut down after them."""
    from cluster_sim.simulation import RaySession

    session = RaySession(num_cpus=2)
    yield session
    session.ray.shutdown()


@pytest.fixture(scope="module")
def ten(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """10vm-2node on every generation, through the CLI on the local backend; `run` draws the report
    (timeline.png, trace.perfetto.json, report.html) at its end."""
    from cluster_sim.cli import app

    out = tmp_path_factory.mktemp("ten") / "out"
    result = CliRunner().invoke(app, ["run", str(TEN), "--out", str(out), "--backend", "local"])
    assert result.exit_code == 0, result.output
    assert "report in" in result.stdout
    return out
