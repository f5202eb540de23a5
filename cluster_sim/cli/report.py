"""`cluster-sim report DIR`: draw a saved results folder again (no re-run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from cluster_sim.cli.console import EXIT_BAD_INPUT, error, out


def report(
    folder: Annotated[Path, typer.Argument(help="results folder written by `cluster-sim run`")],
) -> None:
    """Draw a saved results folder (no re-run): timeline.png, trace.perfetto.json per generation, report.html."""
    from cluster_sim.report.html import ReportError, build_report

    try:
        rep = build_report(folder)
    except ReportError as exc:
        error(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    for g in rep.generations:
        if g.timeline_png is not None:
            out.print(Text(f"{g.name}: {g.timeline_png}, {g.perfetto_json}"), soft_wrap=True)
    for problem in rep.errors:
        error(f"report: {problem}")
    out.print(Text(f"report in {rep.html} ({rep.wall_s:.1f} s)"), soft_wrap=True)
    if rep.errors:
        raise typer.Exit(1)
