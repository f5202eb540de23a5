"""The comparison table: one row per generation, units in the headers.

Each column says which way is better, so the terminal can highlight the best value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

from cluster_sim.results import Summary


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[Summary], float | int | str | None]
    better: str  # "low" | "high" | ""
    fmt: str = "{:,.0f}"


def _lat(x: float | None) -> float | None:
    return x


COLUMNS: list[Column] = [
    Column("generation", lambda s: s.generation, "", "{}"),
    Column("window (h)", lambda s: s.backup_window_s / 3600, "low", "{:,.2f}"),
    Column("lower bound (h)", lambda s: s.window_lower_bound_s / 3600, "", "{:,.2f}"),
    Column("hw snapshots", lambda s: s.hw_snapshots_created, "low"),
    Column("snapshot sets", lambda s: s.snapshot_sets, "low"),
    Column("peak pending snaps", lambda s: s.peak_pending_snapshots, "low"),
    Column("peak snaps/LUN", lambda s: s.peak_snapshots_per_lun, "low"),
    Column("host mounts", lambda s: s.host_mounts, "low"),
    Column("SCSI hot-adds", lambda s: s.scsi_hot_adds, "low"),
    Column("redirected (s)", lambda s: s.redirected_s_total, "low", "{:,.0f}"),
    Column("app-consistent", lambda s: s.outcomes.app_consistent, "high"),
    Column("crash-consistent", lambda s: s.outcomes.crash_consistent, ""),
    Column("saved-state", lambda s: s.outcomes.saved_state, "low"),
    Column("offline", lambda s: s.outcomes.offline, ""),
    Column("failed", lambda s: s.outcomes.failed, "low"),
    Column("torn (undetected)", lambda s: s.torn_undetected, "low"),
    Column("VM downtime (s)", lambda s: s.vm_downtime_s_total, "low", "{:,.0f}"),
    Column("latency p99 before (ms)", lambda s: s.io_latency_ms.baseline_p99, "low", "{:,.2f}"),
    Column("latency p99 during (ms)", lambda s: s.io_latency_ms.backup_p99, "low", "{:,.2f}"),
    Column("copied (TiB)", lambda s: s.bytes_copied_mib / 1024 / 1024, "low", "{:,.2f}"),
    Column("on AVHDX (VM-h)", lambda s: s.avhdx_vm_s / 3600, "low", "{:,.1f}"),
    Column("verified consistent", lambda s: s.verification.app_consistent + s.verification.crash_consistent, "high"),
    Column("verified torn", lambda s: s.verification.torn, "low"),
    Column("verified lost writes", lambda s: s.verification.lost_writes, "low"),
    Column("claim mismatches", lambda s: s.verification.claim_mismatches, "low"),
    Column("leaks", lambda s: s.leaks.snapshots + s.leaks.checkpoints + s.leaks.mounts
           + s.leaks.redirected_holds + s.leaks.hot_adds, "low"),
    Column("audit", lambda s: "ok" if s.audit.ok else f"{len(s.audit.violations)} violations", "", "{}"),
]


def cell(col: Column, s: Summary) -> str:
    v = col.get(s)
    if v is None:
        return "-"
    return col.fmt.format(v)


def best_rows(summaries: list[Summary]) -> dict[str, set[int]]:
    """Per column header, the row indexes holding the best value (only when values differ)."""
    out: dict[str, set[int]] = {}
    for col in COLUMNS:
        if not col.better or len(summaries) < 2:
            continue
        vals = [col.get(s) for s in summaries]
        nums = [(i, float(v)) for i, v in enumerate(vals) if isinstance(v, int | float)]
        if len({v for _, v in nums}) < 2:
            continue
        target = min(v for _, v in nums) if col.better == "low" else max(v for _, v in nums)
        out[col.header] = {i for i, v in nums if v == target}
    return out


def comparison_csv(summaries: list[Summary]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([c.header for c in COLUMNS])
    for s in summaries:
        w.writerow([cell(c, s) for c in COLUMNS])
    return buf.getvalue()


def comparison_md(summaries: list[Summary]) -> str:
    best = best_rows(summaries)
    lines = ["| " + " | ".join(c.header for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for i, s in enumerate(summaries):
        cells = []
        for c in COLUMNS:
            text = cell(c, s)
            cells.append(f"**{text}**" if i in best.get(c.header, set()) else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rich_table(summaries: list[Summary], title: str, width: int = 250):  # type: ignore[no-untyped-def]
    """One row per generation when the terminal is wide enough, else one row per metric."""
    from rich.table import Table

    best = best_rows(summaries)
    if width < 40 + 11 * len(COLUMNS):
        t = Table(title=title, header_style="bold")
        t.add_column("metric", justify="left")
        for s in summaries:
            t.add_column(s.generation, justify="right")
        for c in COLUMNS[1:]:
            t.add_row(c.header, *[
                f"[bold green]{cell(c, s)}[/]" if i in best.get(c.header, set()) else cell(c, s)
                for i, s in enumerate(summaries)
            ])
        return t
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in COLUMNS:
        t.add_column(c.header, justify="left" if c.header == "generation" else "right", overflow="fold")
    for i, s in enumerate(summaries):
        t.add_row(*[
            f"[bold green]{cell(c, s)}[/]" if i in best.get(c.header, set()) else cell(c, s) for c in COLUMNS
        ])
    return t
