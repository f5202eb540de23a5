"""What `cluster-sim run` shows: the progress line per generation while it simulates, then the
comparison table (or the steady-state table), failures and audit findings, or with --json one
JSON document."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from cluster_sim.cli.console import out
from cluster_sim.scenario import Scenario


def _print_results(sc: Scenario, result) -> None:  # type: ignore[no-untyped-def]
    """The comparison table (and the per-job table of a schedule), failures and audit findings."""
    from cluster_sim.report.table import has_schedule, jobs_table, rich_table

    summaries = [g.summary for g in result.generations]
    if not sc.backup:
        _print_steady(result.generations[0])
        return
    out.print(rich_table(summaries, f"{sc.name}: {sc.vm_count()} VMs on {sc.cluster.nodes} nodes, "
                                    f"{sc.storage.csvs} CSVs ({result.backend} backend, seed {sc.seed})",
                         width=out.width))
    if has_schedule(summaries):
        out.print(jobs_table(summaries, "per job (night): window (h) / copied (TiB)"))
    for s in summaries:
        if s.failures_by_reason:
            over = f" over its {len(s.jobs)} jobs" if len(s.jobs) > 1 else ""
            out.print(Text(f"  {s.generation} failures{over}: "
                           + ", ".join(f"{k} {v}" for k, v in s.failures_by_reason.items())), soft_wrap=True)
        if not s.audit.ok:
            out.print(Text(f"  {s.generation} audit: ", style="red") + Text("; ".join(s.audit.violations[:5])),
                      soft_wrap=True)


def _print_json(result, info: dict[str, Any], dest: Path) -> None:  # type: ignore[no-untyped-def]
    """--json: one JSON document on stdout: the comparison rows (comparison.csv's, as numbers), every
    generation's summary (summary.json's), run.json and the results folder."""
    from cluster_sim.report.table import comparison_rows
    from cluster_sim.results import summary_json

    summaries = [g.summary for g in result.generations]
    backup = summaries and summaries[0].generation != "steady"
    doc = {
        "out": str(dest),
        "run": info,
        "comparison": [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
                       for row in comparison_rows(summaries)] if backup else [],
        "summaries": {s.generation: json.loads(summary_json(s)) for s in summaries},  # as in summary.json
    }
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


class RunProgress:
    """While `run` simulates, one line per generation on stderr (a terminal only): waiting, then the
    simulated time it has reached and its VMs done (`ws2012r2  6.2 / ~16 h simulated, 412/800 VMs
    done`), then done; generations side by side each keep their own line."""

    def __init__(self, console: Console, name: str, backend: str, gens: list[str], enabled: bool):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.gens = gens
        self.title = f"{name} on {backend}"
        self.prog = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[where]}"),
                             TimeElapsedColumn(), console=console, transient=True, disable=not enabled)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RunProgress:
        self.prog.__enter__()
        width = max(len(g) for g in self.gens)
        for g in self.gens:
            self.tasks[g] = self.prog.add_task(f"{self.title}: {g:<{width}}", total=None, where="waiting",
                                               start=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.prog.__exit__(*exc)

    def generation(self, gen: str, what: str) -> None:
        task = self.tasks.get(gen)
        if task is None:
            return
        if what == "start":
            self.prog.start_task(task)
            self.prog.update(task, where="starting")
        else:
            total = self.prog.tasks[task].total or 1
            self.prog.update(task, total=total, completed=total, where="done")
            self.prog.stop_task(task)

    def simulated(self, gen: str, where) -> None:  # type: ignore[no-untyped-def]
        task = self.tasks.get(gen)
        if task is not None:
            self.prog.update(task, total=where.vms_total or None, completed=where.vms_done,
                             where=sim_progress_text(where))


def sim_progress_text(w) -> str:  # type: ignore[no-untyped-def]
    """`6.2 / ~16 h simulated, 412/800 VMs done` (a SimProgress in words)."""

    def h(x: float) -> str:
        return f"{x / 3600:.1f}" if x < 36000 else f"{x / 3600:.0f}"

    if w.jobs == 0:  # steady state
        end = w.expected_end_s
        return f"{h(w.sim_s)} / {h(end)} h simulated" if end else f"{h(w.sim_s)} h simulated"
    clock = (f"{h(w.sim_s)} / ~{h(w.expected_end_s)} h simulated"
             if w.expected_end_s is not None and w.expected_end_s > w.sim_s else f"{h(w.sim_s)} h simulated")
    if w.vms_total == 0:
        return f"{clock}, backup not started"
    job = f"job {w.job + 1}/{w.jobs} ({w.mode}): " if w.jobs > 1 else ""
    return f"{job}{clock}, {w.vms_done}/{w.vms_total} VMs done"


def _print_steady(g) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    s = g.summary
    t = Table(title=f"{s.scenario}: steady state, {s.vm_count} VMs, {s.sim_end_s:,.0f} s simulated")
    for h in ("CSV", "coordinator", "VMs", "read (MiB/s)", "write (MiB/s)", "redirected (s)"):
        t.add_column(h, justify="right")
    for c in g.csvs:
        t.add_row(c.csv, c.coordinator, str(c.vms), f"{c.read_mib_s:,.1f}", f"{c.write_mib_s:,.1f}", f"{c.redirected_s:,.0f}")
    out.print(t)
    lat = s.io_latency_ms
    out.print(f"VM I/O latency p50 {lat.baseline_p50} ms, p99 {lat.baseline_p99} ms; "
              f"node failures: {len(s.node_failures)}")
