"""`cluster-sim nights DIR`: the per-night table of a mixed-version cluster's run (cluster OS rolling
upgrade): per job of the schedule, the functional level and nodes per version when it began, the
backup window, the bytes copied, the storage snapshots and sets, the VMs per mechanism and the share
of VMs on RCT. DIR is a results folder (every generation in it) or one generation's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cluster_sim.cli.console import EXIT_BAD_INPUT, error, out

COLUMNS = (  # (header, summary.json key, format)
    ("night", "job", "{}"),
    ("job", "mode", "{}"),
    ("level", "functional_level", "{}"),
    ("nodes 2016/2012R2", None, ""),
    ("window h", "backup_window_s", "{:.2f}"),
    ("copied GiB", "bytes_copied_mib", "{:,.0f}"),
    ("storage snapshots", "storage_snapshots", "{}"),
    ("sets", "snapshot_sets", "{}"),
    ("VMs on 2016 path", "vms_ws2016_path", "{}"),
    ("on RCT", "rct_share", "{:.0%}"),
    ("full copies", "full_copies", "{}"),
)
# the terminal's headers (80 columns)
NARROW = ("night", "job", "level", "nodes 16/12R2", "window h", "GiB", "snaps", "sets", "2016 path", "RCT", "fulls")
SHORT = {"incremental": "incr", "ws2012r2": "2012R2", "ws2016": "2016"}


def cells(night: dict[str, Any]) -> list[str]:
    row = []
    for _head, key, fmt in COLUMNS:
        if key is None:
            row.append(f"{night['nodes_ws2016']}/{night['nodes_ws2012r2']}")
        elif key == "backup_window_s":
            row.append(fmt.format(night[key] / 3600))
        elif key == "bytes_copied_mib":
            row.append(fmt.format(night[key] / 1024))
        else:
            value = night[key]
            row.append(fmt.format(SHORT.get(value, value) if isinstance(value, str) else value))
    return row


def markdown(nights: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for h, _k, _f in COLUMNS) + " |",
             "|" + "|".join("---:" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells(n)) + " |" for n in nights]
    return "\n".join(lines)


def _summaries(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    if (folder / "summary.json").is_file():
        files = [folder / "summary.json"]
    else:
        files = sorted(folder.glob("*/summary.json"))
    return [(f.parent.name, json.loads(f.read_text(encoding="utf-8"))) for f in files]


def nights(
    folder: Annotated[Path, typer.Argument(help="a results folder, or one generation's folder in it")],
    as_markdown: Annotated[bool, typer.Option("--markdown", help="print Markdown tables (as in README)")] = False,
) -> None:
    """Print the per-night table of a mixed-version cluster's run (cluster OS rolling upgrade)."""
    if not folder.is_dir():
        error(f"{folder}: not a folder (give a results folder or a generation's folder)")
        raise typer.Exit(EXIT_BAD_INPUT)
    found = _summaries(folder)
    if not found:
        error(f"{folder}: no summary.json in it or in its generation folders")
        raise typer.Exit(EXIT_BAD_INPUT)
    shown = 0
    for gen, s in found:
        mixed = s.get("mixed")
        if not mixed:
            continue
        shown += 1
        title = f"{s.get('scenario', '?')}, -g {s.get('generation', gen)}: per night"
        if as_markdown:
            out.print(f"**{title}**\n\n{markdown(mixed['nights'])}\n", soft_wrap=True, markup=False)
            continue
        table = Table(title=title, padding=(0, 1), collapse_padding=True)
        for head in NARROW:
            table.add_column(head, justify="right")
        for n in mixed["nights"]:
            table.add_row(*cells(n))
        out.print(table)
    if not shown:
        error(f"{folder}: not a mixed-version cluster's run (no `mixed` section in summary.json: the scenario has "
              f"no cluster.node_versions)")
        raise typer.Exit(EXIT_BAD_INPUT)
