"""`cluster-sim validate FILE`: check a scenario file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from cluster_sim.cli.console import EXIT_BAD_INPUT, error, out
from cluster_sim.scenario import Scenario, ScenarioError, load_scenario


def _load(file: Path, sets: list[str] | None, override_file: Path | None = None) -> Scenario:
    try:
        return load_scenario(file, sets or [], override_file)
    except ScenarioError as exc:
        error(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None


def validate(
    file: Annotated[Path, typer.Argument(help="scenario YAML file")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: dotted.path=value")] = None,
) -> None:
    """Check a scenario file; exit 0 if it is valid, 2 with the reason if not."""
    sc = _load(file, set_)
    gens = ", ".join(sc.backup.generations) if sc.backup else "none (steady state)"
    out.print(Text(f"ok: {file}: '{sc.name}', {sc.cluster.nodes} nodes, {sc.vm_count()} VMs, "
                   f"{sc.storage.csvs} CSVs, generations: {gens}"), soft_wrap=True)
