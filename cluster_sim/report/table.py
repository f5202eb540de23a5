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
from typing import Any

from cluster_sim.results import Summary

TIE_FRACTION = 0.02  # [P] differences under 2 % are ties (no mark)


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[Summary], float | int | str | None]
    better: str  # "low" | "high" | ""
    fmt: str = "{:,.0f}"
    explain: str = ""  # what the number tells a backup architect (the report page shows it beside the row)
    bad_if: Callable[[Any], bool] | None = None  # a value that is a problem whatever the others did (shown red)

    def is_bad(self, s: Summary) -> bool:
        return self.bad_if is not None and bool(self.bad_if(self.get(s)))


def _hours(x: float | None) -> float | None:
    return None if x is None else x / 3600


def _job_mean(s: Summary, mode: str, field: str) -> float | None:
    vals = [getattr(j, field) for j in s.jobs if j.mode == mode]
    return sum(vals) / len(vals) / 3600 if vals else None


def _full_copies_in_incrementals(s: Summary) -> int:
    return sum(j.full_copies for j in s.jobs if j.mode == "incremental")


GENERATION = Column("generation", lambda s: s.generation, "", "{}")
FAILED = Column("failed", lambda s: s.outcomes.failed, "low",
                explain="VMs without a backup after every retry (reasons below the table).", bad_if=bool)
AUDIT = Column("audit", lambda s: "ok" if s.audit.ok else f"{len(s.audit.violations)} violations", "", "{}",
               explain=("The auditor's verdict on the run (one outcome per VM, everything released or counted, "
                        "limits, time)."), bad_if=lambda v: v != "ok")
WINDOW = [
    Column("window (h)", lambda s: s.backup_window_s / 3600, "low", "{:,.2f}",
           explain=("From the start of the job until the last VM has its outcome, retries included: the backup "
                    "window.")),
    Column("lower bound (h)", lambda s: s.window_lower_bound_s / 3600, "", "{:,.2f}",
           explain=("Bytes copied over the narrowest pipe on the copy path; a window close to it is copy-bound,"
                    " far above it means coordination (snapshots, locks, CSV pinning, retries) costs the time.")),
]
SCHEDULE_WINDOWS = [
    Column("full window (h)", lambda s: _job_mean(s, "full", "backup_window_s"), "low", "{:,.2f}",
           explain="With a schedule: the window of the full backup (the mean if there are several)."),
    Column("full lower bound (h)", lambda s: _job_mean(s, "full", "window_lower_bound_s"), "", "{:,.2f}",
           explain="The full's bytes over the narrowest pipe on the copy path."),
    Column("incr. window, mean (h)", lambda s: _job_mean(s, "incremental", "backup_window_s"), "low", "{:,.2f}",
           explain=("With a schedule: the mean window of the incremental jobs (nights); never added to the "
                    "full's.")),
    Column("incr. lower bound, mean (h)", lambda s: _job_mean(s, "incremental", "window_lower_bound_s"), "",
           "{:,.2f}",
           explain=("The incrementals' bytes over the narrowest pipe, averaged: far below the window means "
                    "snapshots and coordination, not the copy, set the night.")),
]
BODY = [
    Column("hw snapshots", lambda s: s.hw_snapshots_created, "low",
           explain="Hardware (LUN) snapshots the array had to create."),
    Column("snapshot sets", lambda s: s.snapshot_sets, "low",
           explain="VSS shadow-copy sets created; each node creates one at a time."),
    Column("VMs per snapshot", lambda s: s.effective_vms_per_snapshot, "", "{:,.1f}",
           explain=("VM captures per hardware LUN snapshot: batching, split by host and CSV (ws2016: every VM "
                    "of a LUN in one set).")),
    Column("peak pending snaps", lambda s: s.peak_pending_snapshots, "low",
           explain=("Most snapshot requests queued at the array at once; a long queue pushes commits past the "
                    "10 s hold-writes limit.")),
    Column("peak snaps/LUN", lambda s: s.peak_snapshots_per_lun, "low",
           explain="Most snapshots existing on one LUN at once, against the array's per-LUN limit."),
    Column("hold-writes overruns", lambda s: s.hold_writes_overruns, "low",
           explain=("Snapshot sets whose writes were held past the 10 s limit (waiting behind other requests at"
                    " the array counts): each fails its VMs, who are retried.")),
    Column("retries", lambda s: s.retries, "low",
           explain="Attempts after the first, all VMs together (a retry waits retry_wait_s)."),
    Column("host mounts", lambda s: s.host_mounts, "low",
           explain=("VHDs mounted on the hosts by auto-recovery; each exposes guest disks to the host and costs"
                    " more the more are mounted.")),
    Column("SCSI hot-adds", lambda s: s.scsi_hot_adds, "low",
           explain=("AutoRecovery disks hot-added to VMs (ws2012r2); a VM without a SCSI controller fails here "
                    "(Event 10103).")),
    Column("redirected (s)", lambda s: s.redirected_s_total, "low", "{:,.0f}",
           explain=("Seconds CSVs spent in redirected access, all CSVs together: non-coordinator I/O goes over "
                    "the cluster network meanwhile.")),
    Column("app-consistent", lambda s: s.outcomes.app_consistent, "high",
           explain="VMs backed up application-consistent (guest VSS)."),
    Column("crash-consistent", lambda s: s.outcomes.crash_consistent, "",
           explain="VMs backed up crash-consistent (no guest VSS, or a standard-checkpoint fallback)."),
    Column("saved-state", lambda s: s.outcomes.saved_state, "low",
           explain="VMs paused in saved state for their snapshot: consistent, but down meanwhile."),
    Column("offline", lambda s: s.outcomes.offline, "",
           explain="VMs that were not running; their files are copied as they are."),
    FAILED,
    Column("torn (undetected)", lambda s: s.torn_undetected, "low",
           explain="Backups claimed consistent but silently torn (ws2008r2 hold-writes overrun).", bad_if=bool),
    Column("VM downtime (s)", lambda s: s.vm_downtime_s_total, "low", "{:,.0f}",
           explain="Seconds VMs were not running, summed: saved-state pauses, migration blackouts, failovers."),
    Column("latency p99 before (ms)", lambda s: s.io_latency_ms.baseline_p99, "low", "{:,.2f}",
           explain="VM I/O latency p99 in steady state before the backup."),
    Column("latency p50 during (ms)", lambda s: s.io_latency_ms.backup_p50, "low", "{:,.2f}",
           explain="VM I/O latency p50 (over VMs and time) while the backup runs."),
    Column("latency p99 during (ms)", lambda s: s.io_latency_ms.backup_p99, "low", "{:,.2f}",
           explain="VM I/O latency p99 while the backup runs: copy streams, copy-on-write, redirected I/O."),
    Column("copied (TiB)", lambda s: s.bytes_copied_mib / 1024 / 1024, "low", "{:,.2f}",
           explain="Bytes read and sent to the backup target."),
]
SCHEDULE_BODY = [
    Column("full copies in incrementals", _full_copies_in_incrementals, "low",
           explain=("VMs copied in full during incremental jobs: no change tracking, or its map lost by a host "
                    "crash or a move (vendor filter before 2016).")),
]
TAIL = [
    Column("on AVHDX (VM-h)", lambda s: s.avhdx_vm_s / 3600, "low", "{:,.1f}",
           explain="VM-hours running on a differencing disk (checkpoint) because of the backup."),
    Column("verified consistent", lambda s: s.verification.app_consistent + s.verification.crash_consistent, "high",
           explain=("Restores that verified as consistent (application- or crash-consistent); offline and "
                    "saved-state VMs verify as consistent too (see Restore verification).")),
    Column("verified torn", lambda s: s.verification.torn, "low",
           explain="Restores that verified as torn: blocks from different instants.", bad_if=bool),
    Column("verified lost writes", lambda s: s.verification.lost_writes, "low",
           explain="Restores missing a write that was on disk before the capture point.", bad_if=bool),
    Column("claim mismatches", lambda s: s.verification.claim_mismatches, "low",
           explain="Backups whose verified state differs from the outcome claimed for them.", bad_if=bool),
    Column("leaks", lambda s: s.leaks.snapshots + s.leaks.checkpoints + s.leaks.mounts
           + s.leaks.redirected_holds + s.leaks.hot_adds, "low",
           explain=("Snapshots, checkpoints, mounts, hot-added disks and redirected-access holds never "
                    "released."), bad_if=bool),
    AUDIT,
]

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
        rows = range(len(summaries)) if col is FAILED else \
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
    return [{("audit violations" if c is AUDIT else c.header):
             (len(s.audit.violations) if c is AUDIT else c.get(s)) for c in cols} for s in summaries]


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
        t.add_column(c.header, justify="left" if c is GENERATION else "right", overflow="fold")
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
