"""Command line: `cluster-sim validate FILE`, `cluster-sim run FILE ...`.

Bad input (a scenario file, a --set override, an option) ends with one message naming the
file, the field path and the reason, exit code 2, and nothing written.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from cluster_sim.scenario import Scenario, ScenarioError, load_scenario

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Simulate Hyper-V failover clusters doing host-level VM backups.")
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

EXIT_BAD_INPUT = 2


def _load(file: Path, sets: list[str] | None, override_file: Path | None = None) -> Scenario:
    try:
        return load_scenario(file, sets or [], override_file)
    except ScenarioError as exc:
        _error(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _error(message: str) -> None:
    """One error message on stderr, printed as is (no markup, no wrapping)."""
    err.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="scenario YAML file")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: dotted.path=value")] = None,
) -> None:
    """Check a scenario file; exit 0 if it is valid, 2 with the reason if not."""
    sc = _load(file, set_)
    gens = ", ".join(sc.backup.generations) if sc.backup else "none (steady state)"
    out.print(Text(f"ok: {file}: '{sc.name}', {sc.cluster.nodes} nodes, {sc.vm_count()} VMs, "
                   f"{sc.storage.csvs} CSVs, generations: {gens}"), soft_wrap=True)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="scenario YAML file")],
    backend: Annotated[str | None, typer.Option(help="node backend: local | ray (default: the file's run.backend)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: the file's seed)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: dotted.path=value (repeatable)")] = None,
    overrides: Annotated[Path | None, typer.Option(
        "--overrides", help="YAML file of dotted.path: value overrides (e.g. a plan's best.yaml), applied before --set")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default results/<name>)")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="join this Ray cluster instead of starting one")] = None,
    generation: Annotated[list[str] | None, typer.Option("--generation", "-g", help="only these generations")] = None,
    workers: Annotated[int | None, typer.Option(
        help="local backend: processes running generations side by side (1 = one after the other; "
             "default: the file's run.workers, 0 = one per core)")] = None,
    trace: Annotated[bool, typer.Option(help="write trace.jsonl per generation")] = True,
    report: Annotated[bool, typer.Option("--report/--no-report",
                                         help="draw timeline.png, trace.perfetto.json and report.html")] = True,
) -> None:
    """Run a scenario: every generation on a fresh copy of the cluster; write results."""
    sets = list(set_ or [])
    if backend is not None:
        sets.append(f"run.backend={backend}")
    if seed is not None:
        sets.append(f"seed={seed}")
    if ray_address is not None:
        sets.append(f"run.ray_address={ray_address}")
    if workers is not None:
        sets.append(f"run.workers={workers}")
    sc = _load(file, sets, overrides)
    if generation:
        known = sc.backup.generations if sc.backup else []
        bad = [g for g in generation if g not in known]
        if bad:
            _error(f"{file}: backup.generations: {', '.join(bad)} not in {known}")
            raise typer.Exit(EXIT_BAD_INPUT)
    dest = out_dir or Path("results") / sc.name
    if dest.exists() and not dest.is_dir():
        _error(f"--out: {dest} exists and is not a folder")
        raise typer.Exit(EXIT_BAD_INPUT)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cluster_sim.report.table import (
        comparison_csv,
        comparison_md,
        has_schedule,
        jobs_md,
        jobs_table,
        rich_table,
    )
    from cluster_sim.results import write_generation
    from cluster_sim.simulation import run as run_sim

    gens = list(generation or (sc.backup.generations if sc.backup else ["steady"]))
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as prog:
        task = prog.add_task(f"{sc.name} on {sc.run.backend}", total=len(gens))

        def progress(gen: str, what: str) -> None:
            if what == "start":
                prog.update(task, description=f"{sc.name} on {sc.run.backend}: {gen}")
            else:
                prog.advance(task)

        result = run_sim(sc, generations=generation or None, progress=progress)

    # Write into a scratch folder first, then move into place: never a half-written result.
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".cluster-sim-", dir=dest.parent))
    try:
        summaries = [g.summary for g in result.generations]
        for g in result.generations:
            if not trace:
                g.trace = None
            write_generation(g, scratch / g.summary.generation)
        if sc.backup:
            (scratch / "comparison.csv").write_text(comparison_csv(summaries))
            (scratch / "comparison.md").write_text(
                comparison_md(summaries) + (f"\nPer job:\n\n{jobs_md(summaries)}" if has_schedule(summaries) else ""))
        dest.mkdir(parents=True, exist_ok=True)
        for item in sorted(scratch.iterdir()):
            target = dest / item.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(item, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    if sc.backup:
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
    else:
        _print_steady(result.generations[0])
    if report and sc.backup:  # (a steady-state run has no backup to draw; `cluster-sim report` still can)
        try:  # a report that cannot be drawn is a warning: the run's results and exit code stand
            from cluster_sim.report.html import build_report

            rep = build_report(dest)
            out.print(Text(f"report in {rep.html} ({rep.wall_s:.1f} s)"), soft_wrap=True)
            for problem in rep.errors:
                err.print(Text(f"warning: report: {problem}", style="yellow"), soft_wrap=True)
        except Exception as exc:  # noqa: BLE001
            err.print(Text(f"warning: report not written: {type(exc).__name__}: {exc}", style="yellow"), soft_wrap=True)
    out.print(Text(f"results in {dest}/ (wall {result.wall_s:.1f} s)"), soft_wrap=True)
    if any(not g.summary.audit.ok for g in result.generations):
        raise typer.Exit(1)


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


from cluster_sim.sweep_cli import register as _register_sweep  # noqa: E402

_register_sweep(app)

from cluster_sim.plan_cli import register as _register_plan  # noqa: E402

_register_plan(app)


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="results folder written by `cluster-sim run`")],
) -> None:
    """Draw a saved results folder (no re-run): timeline.png, trace.perfetto.json per generation, report.html."""
    from cluster_sim.report.html import ReportError, build_report

    try:
        rep = build_report(folder)
    except ReportError as exc:
        _error(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    for g in rep.generations:
        if g.timeline_png is not None:
            out.print(Text(f"{g.name}: {g.timeline_png}, {g.perfetto_json}"), soft_wrap=True)
    for problem in rep.errors:
        _error(f"report: {problem}")
    out.print(Text(f"report in {rep.html} ({rep.wall_s:.1f} s)"), soft_wrap=True)
    if rep.errors:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
