"""The comparison table: one row per generation, units in the headers.

Each column says which way is better, so the terminal can mark the best value, honestly:
- a generation with more failed VMs than another is never marked best (outside the `failed`
  column): a short window or few snapshots bought with failures is not a win;
- differences under 2 % are ties: the values within 2 % of the best lead together, and when every
  eligible generation leads, nothing is marked.
With a schedule (a full, then incrementals) the table shows the full's window and the mean
incremental window, never their sum. `comparison.csv` holds plain numbers (no thousands
separators), with the units in the headers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

from cluster_sim.results import Summary

TIE_FRACTION = 0.02  # [P] differences under 2 % are ties (no mark)


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[Summary], float | int | str | None]
    better: str  # "low" | "high" | ""
    fmt: str = "{:,.0f}"


def _hours(x: float | None) -> float | None:
    return None if x is None else x / 3600


def _job_mean(s: Summary, mode: str, field: str) -> float | None:
    vals = [getattr(j, field) for j in s.jobs if j.mode == mode]
    return sum(vals) / len(vals) / 3600 if vals else None


def _full_copies_in_incrementals(s: Summary) -> int:
    return sum(j.full_copies for j in s.jobs if j.mode == "incremental")


WINDOW = [
    Column("window (h)", lambda s: s.backup_window_s / 3600, "low", "{:,.2f}"),
    Column("lower bound (h)", lambda s: s.window_lower_bound_s / 3600, "", "{:,.2f}"),
]
SCHEDULE_WINDOWS = [
    Column("full window (h)", lambda s: _job_mean(s, "full", "backup_window_s"), "low", "{:,.2f}"),
    Column("full lower bound (h)", lambda s: _job_mean(s, "full", "window_lower_bound_s"), "", "{:,.2f}"),
    Column("incr. window, mean (h)", lambda s: _job_mean(s, "incremental", "backup_window_s"), "low", "{:,.2f}"),
    Column("incr. lower bound, mean (h)", lambda s: _job_mean(s, "incremental", "window_lower_bound_s"), "",
           "{:,.2f}"),
]
BODY = [
    Column("hw snapshots", lambda s: s.hw_snapshots_created, "low"),
    Column("snapshot sets", lambda s: s.snapshot_sets, "low"),
    Column("VMs per snapshot", lambda s: s.effective_vms_per_snapshot, "", "{:,.1f}"),
    Column("peak pending snaps", lambda s: s.peak_pending_snapshots, "low"),
    Column("peak snaps/LUN", lambda s: s.peak_snapshots_per_lun, "low"),
    Column("hold-writes overruns", lambda s: s.hold_writes_overruns, "low"),
    Column("retries", lambda s: s.retries, "low"),
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
    Column("latency p50 during (ms)", lambda s: s.io_latency_ms.backup_p50, "low", "{:,.2f}"),
    Column("latency p99 during (ms)", lambda s: s.io_latency_ms.backup_p99, "low", "{:,.2f}"),
    Column("copied (TiB)", lambda s: s.bytes_copied_mib / 1024 / 1024, "low", "{:,.2f}"),
]
SCHEDULE_BODY = [
    Column("full copies in incrementals", _full_copies_in_incrementals, "low"),
]
TAIL = [
    Column("on AVHDX (VM-h)", lambda s: s.avhdx_vm_s / 3600, "low", "{:,.1f}"),
    Column("verified consistent", lambda s: s.verification.app_consistent + s.verification.crash_consistent, "high"),
    Column("verified torn", lambda s: s.verification.torn, "low"),
    Column("verified lost writes", lambda s: s.verification.lost_writes, "low"),
    Column("claim mismatches", lambda s: s.verification.claim_mismatches, "low"),
    Column("leaks", lambda s: s.leaks.snapshots + s.leaks.checkpoints + s.leaks.mounts
           + s.leaks.redirected_holds + s.leaks.hot_adds, "low"),
    Column("audit", lambda s: "ok" if s.audit.ok else f"{len(s.audit.violations)} violations", "", "{}"),
]
GENERATION = Column("generation", lambda s: s.generation, "", "{}")

# every column a table can have (COLUMNS[0] is the generation)
COLUMNS: list[Column] = [GENERATION, *WINDOW, *SCHEDULE_WINDOWS, *BODY, *SCHEDULE_BODY, *TAIL]


def has_schedule(summaries: list[Summary]) -> bool:
    """Some generation ran several jobs, or a job that is not the only full of the run."""
    return any(len(s.jobs) > 1 for s in summaries)


def columns_for(summaries: list[Summary]) -> list[Column]:
    if has_schedule(summaries):
        return [GENERATION, *SCHEDULE_WINDOWS, *BODY, *SCHEDULE_BODY, *TAIL]
    return [GENERATION, *WINDOW, *BODY, *TAIL]


def cell(col: Column, s: Summary) -> str:
    v = col.get(s)
    if v is None:
        return "-"
    return col.fmt.format(v)


def _tied(a: float, b: float) -> bool:
    scale = max(abs(a), abs(b))
    return scale == 0 or abs(a - b) / scale < TIE_FRACTION


def best_rows(summaries: list[Summary], columns: list[Column] | None = None) -> dict[str, set[int]]:
    """Per column header, the row indexes marked best. Only the generations with the fewest failed
    VMs can be marked (except in `failed` itself); values within 2 % of the best tie with it; when
    every eligible generation ties, nothing is marked."""
    out: dict[str, set[int]] = {}
    if len(summaries) < 2:
        return out
    fewest = min(s.outcomes.failed for s in summaries)
    for col in columns or columns_for(summaries):
        if not col.better:
            continue
        rows = range(len(summaries)) if col.header == "failed" else \
            [i for i, s in enumerate(summaries) if s.outcomes.failed == fewest]
        nums = [(i, float(v)) for i in rows if isinstance(v := col.get(summaries[i]), int | float)]
        if len(nums) < 2:
            continue
        target = min(v for _, v in nums) if col.better == "low" else max(v for _, v in nums)
        leading = {i for i, v in nums if _tied(v, target)}
        if len(leading) < len(nums):
            out[col.header] = leading
    return out


def _plain(v: float | int | str | None) -> str | float | int:
    if v is None:
        return ""
    if isinstance(v, float):
        return round(v, 6)
    return v


def comparison_rows(summaries: list[Summary]) -> list[dict[str, str | float | int | None]]:
    """The comparison as data: one dict per generation, header (unit included) -> plain number
    (None where a value does not apply); `audit violations` counts the auditor's findings (0 = ok)."""
    cols = columns_for(summaries)
    return [{("audit violations" if c.header == "audit" else c.header):
             (len(s.audit.violations) if c.header == "audit" else c.get(s)) for c in cols} for s in summaries]


def comparison_csv(summaries: list[Summary]) -> str:
    """Plain numbers, units in the headers; `audit` is the number of violations (0 = ok)."""
    rows = comparison_rows(summaries)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(rows[0]) if rows else [])
    for r in rows:
        w.writerow([_plain(v) for v in r.values()])
    return buf.getvalue()


def comparison_md(summaries: list[Summary]) -> str:
    cols = columns_for(summaries)
    best = best_rows(summaries, cols)
    lines = ["| " + " | ".join(c.header for c in cols) + " |", "|" + "---|" * len(cols)]
    for i, s in enumerate(summaries):
        cells = []
        for c in cols:
            text = cell(c, s)
            cells.append(f"**{text}**" if i in best.get(c.header, set()) else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def jobs_md(summaries: list[Summary]) -> str:
    """With a schedule: one row per job (night), each generation's window and bytes."""
    n = max(len(s.jobs) for s in summaries)
    head = ["job", "mode"] + [f"{s.generation} window (h)" for s in summaries] + \
           [f"{s.generation} copied (TiB)" for s in summaries]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in range(n):
        mode = next((s.jobs[k].mode for s in summaries if k < len(s.jobs)), "")
        wins = [f"{s.jobs[k].backup_window_s / 3600:,.2f}" if k < len(s.jobs) else "-" for s in summaries]
        tib = [f"{s.jobs[k].bytes_copied_mib / 2**20:,.2f}" if k < len(s.jobs) else "-" for s in summaries]
        lines.append("| " + " | ".join([str(k), mode, *wins, *tib]) + " |")
    return "\n".join(lines) + "\n"


def rich_table(summaries: list[Summary], title: str, width: int = 250):  # type: ignore[no-untyped-def]
    """One row per generation when the terminal is wide enough, else one row per metric."""
    from rich.table import Table

    cols = columns_for(summaries)
    best = best_rows(summaries, cols)
    if width < 40 + 11 * len(cols):
        t = Table(title=title, header_style="bold")
        t.add_column("metric", justify="left")
        for s in summaries:
            t.add_column(s.generation, justify="right")
        for c in cols[1:]:
            t.add_row(c.header, *[
                f"[bold green]{cell(c, s)}[/]" if i in best.get(c.header, set()) else cell(c, s)
                for i, s in enumerate(summaries)
            ])
        return t
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in cols:
        t.add_column(c.header, justify="left" if c.header == "generation" else "right", overflow="fold")
    for i, s in enumerate(summaries):
        t.add_row(*[
            f"[bold green]{cell(c, s)}[/]" if i in best.get(c.header, set()) else cell(c, s) for c in cols
        ])
    return t


def jobs_table(summaries: list[Summary], title: str):  # type: ignore[no-untyped-def]
    """The per-job (per-night) windows and bytes of a schedule, for the terminal: one column per
    generation, each cell "window h / TiB copied"."""
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    t.add_column("job", justify="right")
    t.add_column("mode")
    for s in summaries:
        t.add_column(f"{s.generation}\nh / TiB", justify="right")
    for k in range(max(len(s.jobs) for s in summaries)):
        mode = next((s.jobs[k].mode for s in summaries if k < len(s.jobs)), "")
        t.add_row(str(k), "incr." if mode == "incremental" else mode, *[
            f"{s.jobs[k].backup_window_s / 3600:,.2f} / {s.jobs[k].bytes_copied_mib / 2**20:,.2f}"
            if k < len(s.jobs) else "-" for s in summaries])
    return t
