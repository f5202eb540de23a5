"""`cluster-sim sweep STUDY`: a load study on Ray (see cluster_sim/studies/).

Exit codes: 0 every run ok, 1 some run failed (its error is in runs.parquet) or is invalid (its
auditor failed: recorded with valid=false, left out of the means), 2 bad study file or option (one
message naming the file, the field path and the reason; nothing written), or another sweep is
writing into the same folder, 130 interrupted (what finished is recorded; `--resume` goes on from
there).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from cluster_sim.cli.console import EXIT_BAD_INPUT, err, error, from_command_line, out


def sweep(
    ctx: typer.Context,
    study: Annotated[Path, typer.Argument(help="study YAML file")],
    address: Annotated[str | None, typer.Option(
        "--address", envvar="RAY_ADDRESS", show_envvar=True,
        help="run on this existing Ray cluster (default: $RAY_ADDRESS, else a local Ray)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default results/<study>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="skip runs already recorded in DIR/runs.parquet")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="with --resume: run again the runs that recorded an error")] = False,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", min=1, help="CPUs of the local Ray instance (default: all)")] = None,
    serial: Annotated[bool, typer.Option("--serial", help="run in this process, one run at a time (no Ray)")] = False,
    run_timeout: Annotated[float | None, typer.Option(
        "--run-timeout", min=0.001, help="wall-clock deadline of one run, seconds (default: the study's "
        "run_timeout_s, else from the run's size); a run past it is cancelled and run once more")] = None,
) -> None:
    """Run a load study: every grid point x seed x generation as a Ray task; runs.parquet, aggregate.csv, plots."""
    from cluster_sim.studies import (
        StudyError,
        StudyRunError,
        identical_reasons,
        is_valid,
        load_study,
        run_study,
    )

    try:
        plan = load_study(study)
    except StudyError as exc:
        error(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if serial:
        if address and from_command_line(ctx, "address"):
            error("--address and --serial: choose one")
            raise typer.Exit(EXIT_BAD_INPUT)
        address = None  # (a $RAY_ADDRESS of the shell does not stop a serial sweep)
    address = address or None
    if retry_failed and not resume:
        error("--retry-failed goes with --resume")
        raise typer.Exit(EXIT_BAD_INPUT)
    if run_timeout is not None:
        plan.run_timeout_s = run_timeout
    dest = out_dir or Path("results") / plan.name
    if dest.exists() and not dest.is_dir():
        error(f"--out: {dest} exists and is not a folder")
        raise typer.Exit(EXIT_BAD_INPUT)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    where = "in process" if serial else (f"on Ray at {address}" if address else "on a local Ray instance")
    identical = len(plan.duplicates())
    same = (f" ({identical} identical to another run, copied instead of run: "
            f"{'; '.join(identical_reasons(plan))})" if identical else "")
    out.print(Text(f"{plan.name}: {len(plan.points)} points x {len(plan.seeds)} seeds x "
                   f"{len(plan.generations)} generations = {plan.total_runs} runs{same}, {where}"), soft_wrap=True)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} done"),
                  TextColumn("[red]{task.fields[failed]} failed[/] [yellow]{task.fields[invalid]} invalid[/] "
                             "[cyan]{task.fields[running]} running[/]"),
                  TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                  console=err, transient=True, disable=not err.is_terminal) as prog:
        task = prog.add_task(plan.name, total=plan.total_runs, failed=0, invalid=0, running=0, eta="-:--:--")

        def progress(state: Any, row: Any) -> None:
            prog.update(task, completed=state.done, failed=state.failed, invalid=state.invalid,
                        running=state.running, eta=_clock(state.eta_s))
            if state.done == state.total:
                prog.update(task, description=f"{plan.name}: writing aggregate.csv and plots")

        try:
            outcome = run_study(plan, dest, resume=resume, retry_failed=retry_failed,
                                executor="serial" if serial else "ray", address=address,
                                num_cpus=num_cpus, progress=progress)
        except StudyRunError as exc:
            error(str(exc))
            raise typer.Exit(EXIT_BAD_INPUT) from None

    ok = outcome.total - outcome.failed - outcome.invalid
    notes = [f"{outcome.executed} run now", f"{outcome.skipped} already recorded"] if resume else \
            [f"{outcome.executed} run"]
    if outcome.identical:
        notes.append(f"{outcome.copied} identical to another run, not run again")
    if outcome.retried:
        notes.append(f"{outcome.retried} run a second time after an error or a timeout")
    if outcome.took_over:
        notes.append(f"took over the lock of a sweep that is gone ({outcome.took_over})")
    if outcome.dropped:
        notes.append(f"{outcome.dropped} recorded runs of another grid/scenario dropped")
    if outcome.interrupted:
        recorded = len(outcome.rows)
        out.print(Text(f"interrupted: {recorded}/{outcome.total} runs recorded in {dest / 'runs.parquet'}; "
                       f"go on with --resume"), soft_wrap=True)
        raise typer.Exit(130)
    _print_table(plan, outcome.aggregate)
    def where(r: dict[str, Any]) -> str:
        return f"seed {r.get('seed')} {r.get('generation')} " + ", ".join(f"{a}={r.get(a)}" for a in plan.axes)

    failed = [r for r in outcome.rows if r.get("error")]
    invalid = [r for r in outcome.rows if not r.get("error") and not is_valid(r)]
    if failed:
        out.print(Text(f"  failed: {where(failed[0])}: {failed[0]['error']}", style="red"), soft_wrap=True)
    if invalid:
        r = invalid[0]
        why = r.get("audit.violations") or "audit failed"
        out.print(Text(f"  invalid (audit failed, left out of the means): {where(r)}: {why}", style="yellow"),
                  soft_wrap=True)
    out.print(Text(f"{ok} ok, {outcome.failed} failed, {outcome.invalid} invalid of {outcome.total} "
                   f"({', '.join(notes)}) in {outcome.wall_s:.1f} s; results in {dest}/ (runs.parquet, "
                   f"aggregate.csv, {len(outcome.plots)} plots)"), soft_wrap=True)
    if outcome.failed or outcome.invalid:
        raise typer.Exit(1)


def _clock(seconds: float | None) -> str:
    """An ETA as h:mm:ss (`-:--:--` while there is none)."""
    if seconds is None or math.isnan(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.3g}"


def _print_table(plan: Any, agg: list[dict[str, Any]], limit: int = 40) -> None:
    from rich.table import Table

    from cluster_sim.studies import is_duration, metric_label

    room = max(1, (out.width - 12 * len(plan.axes) - 12 - 8) // 17)  # metrics that fit the terminal
    metrics = plan.metrics[:room]
    t = Table(title=f"{plan.name}: mean ± 95 % CI half-width over seeds", title_justify="left")
    for a in plan.axes:
        t.add_column(a.rsplit(".", 1)[-1], justify="right", overflow="fold")
    t.add_column("generation", no_wrap=True)
    t.add_column("runs", justify="right")  # runs in the means; invalid and failed ones beside
    for m in metrics:
        t.add_column(metric_label(m), justify="right", overflow="fold")
    for rec in agg[:limit]:
        left_out = [f"{rec[k]} {k}" for k in ("invalid", "failed") if rec.get(k)]
        cells = [str(rec[a]) for a in plan.axes] + [rec["generation"],
                                                    f"{rec['runs']}" + (f" (+{', '.join(left_out)})" if left_out else "")]
        for m in metrics:
            mean, lo, hi = rec[f"{m}.mean"], rec[f"{m}.ci95_low"], rec[f"{m}.ci95_high"]
            if is_duration(m):  # in hours, as `run` shows durations
                mean, lo, hi = mean / 3600, lo / 3600, hi / 3600
            half = (hi - lo) / 2
            cells.append(_fmt(mean) if math.isnan(half) or half == 0 else f"{_fmt(mean)} ± {_fmt(half)}")
        t.add_row(*cells)
    out.print(t)
    hidden = []
    if len(agg) > limit:
        hidden.append(f"{len(agg) - limit} more rows")
    if len(metrics) < len(plan.metrics):
        hidden.append("metrics " + ", ".join(plan.metrics[len(metrics):]))
    if hidden:
        out.print(Text(f"  ({' and '.join(hidden)} in aggregate.csv)"), soft_wrap=True)
