"""`cluster-sim plan PLAN`: search the backup settings within limits (see cluster_sim/studies/plan/).

Exit codes: 0 a feasible best trial was found, 1 no trial met every constraint (the summary names
the constraint), 2 bad plan file or option (one message naming the file, the field path, the
value and the reason; nothing written), 130 interrupted (`--resume` goes on from there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from cluster_sim.cli.console import EXIT_BAD_INPUT, err, error, out


def plan(
    plan_file: Annotated[Path, typer.Argument(help="plan YAML file")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default results/<plan>)")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", envvar="RAY_ADDRESS", help="run on this existing Ray cluster (default: $RAY_ADDRESS, "
                                                "else a local Ray instance)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="go on with the search recorded in DIR")] = False,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", min=1,
                                                 help="CPUs of the local Ray instance (default: all)")] = None,
) -> None:
    """Search the backup settings for the best objective within the constraints (Ray Tune + Optuna);
    trials.parquet, best.yaml, pareto.png, report.html and the baseline beside the best trial."""
    from cluster_sim.studies.plan import PlanError, PlanRunError, load_plan, run_plan

    try:
        spec = load_plan(plan_file)
    except PlanError as exc:
        error(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    dest = out_dir or Path("results") / spec.name
    if dest.exists() and not dest.is_dir():
        error(f"--out: {dest} exists and is not a folder")
        raise typer.Exit(EXIT_BAD_INPUT)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    where = f"on Ray at {address}" if address else "on a local Ray instance"
    objective = " and ".join(f"{o.direction} {o.metric}" for o in spec.objectives)
    out.print(Text(f"{spec.name}: {objective} of {spec.generation} on {spec.base.get('name')}, "
                   f"{len(spec.domains)} settings, {len(spec.constraints)} constraints, "
                   f"{len(spec.seeds)} seeds per trial, up to {spec.trials} trials"
                   + (f" or {spec.time_s:,.0f} s" if spec.time_s else "") + f", {where}"), soft_wrap=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
                  TextColumn("[green]{task.fields[feasible]} feasible[/] {task.fields[best]}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as prog:
        task = prog.add_task(spec.name, total=spec.trials, feasible=0, best="")

        def progress(state: Any) -> None:
            best = ""
            if spec.pareto:
                best = f"front: {state.front} trials"
            elif state.best is not None:
                best = f"best so far: {_num(state.best['objectives'][0])} (trial {state.best['trial']})"
            prog.update(task, completed=state.done, feasible=state.feasible, best=best)

        try:
            outcome = run_plan(spec, dest, resume=resume, address=address, num_cpus=num_cpus,
                               progress=progress)
        except PlanRunError as exc:
            error(str(exc))
            raise typer.Exit(EXIT_BAD_INPUT) from None

    if outcome.interrupted:
        out.print(Text(f"interrupted: {len(outcome.records)}/{spec.trials} trials done, recorded in "
                       f"{dest / 'tune'}; go on with --resume"), soft_wrap=True)
        raise typer.Exit(130)
    print_summary(outcome.summary)
    notes = []
    if outcome.restored:
        notes.append(f"{outcome.restored} restored")
    if outcome.out_of_time:
        notes.append(f"stopped by the time budget of {spec.time_s:,.0f} s")
    out.print(Text(f"{len(outcome.records)} trials ({', '.join(notes) + '; ' if notes else ''}"
                   f"{outcome.summary['runs']} runs) in {outcome.wall_s:.1f} s; results in {dest}/ "
                   "(trials.parquet, runs.parquet, " + ("best.yaml, " if outcome.summary['best'] else "")
                   + "pareto.png, report.html)"), soft_wrap=True)
    try:  # a report that cannot be drawn is a warning: the plan's results and exit code stand
        from cluster_sim.report.html import build_report

        rep = build_report(dest)
        out.print(Text(f"report in {rep.html}"), soft_wrap=True)
    except Exception as exc:  # noqa: BLE001
        err.print(Text(f"warning: report not written: {type(exc).__name__}: {exc}", style="yellow"),
                  soft_wrap=True)
    if outcome.summary["best"] is None:
        raise typer.Exit(1)


def _num(v: Any) -> str:
    from cluster_sim.studies.plan import fmt_value

    if isinstance(v, float | int) and not isinstance(v, bool) and abs(v) >= 1e6:
        return f"{v / 1e6:.4g} M"  # (the terminal is narrow; the report and plan.json have every digit)
    return fmt_value(v)


def print_summary(summary: dict[str, Any]) -> None:
    """The baseline (the scenario as written) beside the best feasible trial, then the answer in words."""
    from rich.table import Table

    best = summary["best"]
    title = (f"{summary['plan']}: {summary['trials']} trials of {summary['generation']}, "
             f"{summary['feasible']} feasible, seeds {', '.join(map(str, summary['seeds']))}")
    t = Table(title=title, title_justify="left")
    t.add_column("", overflow="fold", min_width=16)
    t.add_column("baseline", justify="right", no_wrap=True)
    t.add_column(f"best #{best['trial']}" if best else "best", justify="right", no_wrap=True)
    t.add_column("change", justify="right", no_wrap=True)
    t.add_column("limit", no_wrap=True)

    def mark(ok: Any) -> str:
        return "" if ok is None else (" ok" if ok else " NO")

    for row in summary["comparison"]:
        if row["kind"] == "setting":
            t.add_row(row["name"], _num(row["baseline"]), _num(row["best"]), "", row["short"], style="dim")
            continue
        limits = row["constraints"]
        base_ok = None if not limits else all(c["baseline_met"] for c in limits)
        best_ok = None if not limits or not best else all(c["best_met"] for c in limits)
        change = "" if row["change"] is None else (
            f"{row['change_pct']:+.1f} %" if row["change_pct"] is not None else f"{row['change']:+g}")
        what = ", ".join(([row["role"].removeprefix("objective: ")] if row["role"] else [])
                         + [f"{c['op']} {_num(c['value'])}" for c in limits])
        t.add_row(row["name"], _num(row["baseline"]) + mark(base_ok), _num(row["best"]) + mark(best_ok), change, what)
    out.print(t)
    for line in summary["answer"]:
        out.print(Text(line, style=None if best else "bold red"), soft_wrap=True)
