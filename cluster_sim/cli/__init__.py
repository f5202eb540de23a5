"""Command line: `cluster-sim validate FILE`, `run FILE`, `sweep STUDY`, `plan PLAN`, `report DIR`,
`nights DIR`.

This module assembles the app; each command is a module of this package (validate.py, run.py
with publish.py and run_output.py, sweep.py, plan.py, report.py, nights.py), console.py holds what they
share (the consoles, exit codes, one error message). Bad input ends with one message naming the
file, the field path and the reason, exit code 2, and nothing written.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from cluster_sim.cli import nights, plan, report, run, sweep, validate
from cluster_sim.cli.console import out
from cluster_sim.cli.run import _complete_generation
from cluster_sim.cli.run_output import sim_progress_text

app = typer.Typer(add_completion=True, no_args_is_help=True,
                  help="Simulate Hyper-V failover clusters doing host-level VM backups.")


def _show_version(value: bool) -> None:
    if value:
        from cluster_sim.version import package_version, sim_version

        out.print(Text(f"cluster-sim {package_version()} (simulator {sim_version()})"), soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="print the version (and the simulator's source hash) and exit")] = False,
) -> None:
    """Simulate Hyper-V failover clusters doing host-level VM backups."""


for _command in (validate.validate, run.run, sweep.sweep, plan.plan, report.report, nights.nights):  # (--help lists them so)
    app.command()(_command)


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main", "sim_progress_text", "_complete_generation"]
