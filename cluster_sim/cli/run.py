"""`cluster-sim run FILE`: run a scenario, every generation on a fresh copy of the cluster, and
write its results folder.

Bad input (a scenario file, a --set override, an option) ends with one message naming the
file, the field path and the reason, exit code 2, and nothing written."""

from __future__ import annotations

import difflib
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.text import Text

from cluster_sim.cli.console import EXIT_BACKEND_FAILED, EXIT_BAD_INPUT, err, error, from_command_line, out
from cluster_sim.cli.publish import (
    RESOLVED_FILE,
    RUN_FILE,
    _clear_stale_scratch,
    _now,
    _publish,
    _run_key,
    _unusable_out,
    _write_run_json,
)
from cluster_sim.cli.run_output import RunProgress, _print_json, _print_results
from cluster_sim.results import GenerationResult, scenario_yaml
from cluster_sim.scenario import GENERATIONS, Scenario, ScenarioError, _shown, load_scenario


def _complete_generation(incomplete: str) -> list[str]:
    return [g for g in GENERATIONS if g.startswith(incomplete)]


def run(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="scenario YAML file")],
    backend: Annotated[Literal["local", "ray"] | None, typer.Option(
        help="node backend (default: the file's run.backend)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: the file's seed)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: dotted.path=value (repeatable)")] = None,
    overrides: Annotated[Path | None, typer.Option(
        "--overrides", help="YAML file of dotted.path: value overrides (e.g. a plan's best.yaml), applied before --set")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default results/<name>)")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", "--ray-address", envvar="RAY_ADDRESS", show_envvar=True,
        help="with --backend ray: join this Ray cluster instead of starting one (default: the file's "
             "run.ray_address, else $RAY_ADDRESS)")] = None,
    generation: Annotated[list[str] | None, typer.Option(
        "--generation", "-g", metavar="[" + "|".join(GENERATIONS) + "]", autocompletion=_complete_generation,
        help="only these generations (repeatable)")] = None,
    workers: Annotated[int | None, typer.Option(
        help="local backend: processes running generations side by side (1 = one after the other; "
             "default: the file's run.workers, 0 = one per core)")] = None,
    trace: Annotated[bool, typer.Option(help="write trace.jsonl per generation")] = True,
    report: Annotated[bool, typer.Option("--report/--no-report",
                                         help="draw timeline.png, trace.perfetto.json and report.html")] = True,
    force: Annotated[bool, typer.Option(
        "--force", help="replace an --out that holds the results of another run")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="print the comparison rows and every summary as one JSON document on stdout, nothing "
                       "else there")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="no progress, no table: only warnings and errors (on stderr)")] = False,
) -> None:
    """Run a scenario: every generation on a fresh copy of the cluster; write results."""
    gens_asked = list(generation or [])
    address_given = address is not None and from_command_line(ctx, "address")
    sc = _load_for_run(file, set_ or [], overrides, backend, seed, workers)
    _check_generations(file, sc, gens_asked)
    address, address_from = _ray_address(file, sc, address, address_given)
    if address is not None and address != sc.run.ray_address:
        sc = sc.model_copy(update={"run": sc.run.model_copy(update={"ray_address": address})})
    gens = list(gens_asked or (sc.backup.generations if sc.backup else ["steady"]))
    dest = out_dir or Path("results") / sc.name
    key = _run_key(sc, file, set_ or [], overrides, gens)
    problem = _unusable_out(dest, key, force)
    if problem:
        error(f"--out: {problem}")
        raise typer.Exit(EXIT_BAD_INPUT)
    # The whole results folder is written under a scratch name beside --out (made now: an unwritable
    # --out is found before the simulation) and swapped in with one rename at the end.
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale_scratch(dest)
        scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.cluster-sim-{os.getpid()}-", dir=dest.parent))
        umask = os.umask(0o022)
        os.umask(umask)
        scratch.chmod(0o777 & ~umask)  # (mkdtemp makes it private; the results folder is not)
    except OSError as exc:
        error(f"--out: cannot write results beside {dest}: {exc.strerror or exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None

    from cluster_sim.cluster.nodes import BackendFailure
    from cluster_sim.report.table import comparison_csv, comparison_md, has_schedule, jobs_md
    from cluster_sim.simulation import RayUnavailable
    from cluster_sim.simulation import run as run_sim

    draw = report and sc.backup is not None  # (a steady-state run has no backup to draw; `cluster-sim report` still can)
    if draw:
        try:  # before the generations' worker processes fork: they draw with it
            import cluster_sim.report.html  # noqa: F401
        except Exception:  # noqa: BLE001 - said as a warning when the report is built
            pass
    # each generation's folder is written, and its pictures drawn, where the generation ran
    finish = functools.partial(_finish_generation, scratch, trace, draw)

    started = _now()
    published = False
    said: list[tuple[Console, str, str | None]] = []  # printed after the comparison table
    try:
        with RunProgress(err, sc.name, sc.run.backend, gens, enabled=err.is_terminal and not quiet) as prog:
            try:
                result = run_sim(sc, generations=gens_asked or None, progress=prog.generation,
                                 sim_progress=prog.simulated if prog.enabled else None, finish=finish)
            except RayUnavailable as exc:
                error(f"{address_from or 'ray'}: {exc}")
                raise typer.Exit(EXIT_BAD_INPUT) from None
            except BackendFailure as exc:
                error(f"the Ray node backend failed, no results written: {exc}")
                raise typer.Exit(EXIT_BACKEND_FAILED) from None
        for note in result.notes:
            err.print(Text(f"warning: {note} (results unaffected)", style="yellow"), soft_wrap=True)

        summaries = [g.summary for g in result.generations]
        if sc.backup:
            (scratch / "comparison.csv").write_text(comparison_csv(summaries))
            (scratch / "comparison.md").write_text(
                comparison_md(summaries) + (f"\nPer job:\n\n{jobs_md(summaries)}" if has_schedule(summaries) else ""))
        resolved = sc.model_copy(deep=True)
        if gens_asked and resolved.backup is not None:
            resolved.backup.generations = list(gens_asked)  # -g: what ran, in the order it ran
        (scratch / RESOLVED_FILE).write_text(
            scenario_yaml(resolved, f"{file} with the run's --overrides, --set, --seed, --backend and -g applied"),
            encoding="utf-8")
        if draw:
            try:  # a report that cannot be drawn is a warning: the run's results and exit code stand
                from cluster_sim.report.html import build_report

                rep = build_report(scratch, drawn={g.summary.generation: g.drawn for g in result.generations
                                                   if g.drawn is not None})
                said.append((out, f"report in {dest / rep.html.name}", None))  # (drawn within the wall below)
                said += [(err, f"warning: report: {problem}", "yellow") for problem in rep.errors]
            except Exception as exc:  # noqa: BLE001
                said.append((err, f"warning: report not written: {type(exc).__name__}: {exc}", "yellow"))
        info = _write_run_json(scratch / RUN_FILE, sc, file, set_ or [], gens_asked, started, result, key)
        _publish(scratch, dest)
        published = True
    finally:
        if not published:
            shutil.rmtree(scratch, ignore_errors=True)

    if as_json:
        _print_json(result, info, dest)
    elif not quiet:
        _print_results(sc, result)
    for console, line, style in said:
        if console is err or not (quiet or as_json):
            console.print(Text(line, style=style or ""), soft_wrap=True)
    if not (quiet or as_json):
        out.print(Text(f"results in {dest}/ (wall {result.wall_s:.1f} s)"), soft_wrap=True)
    if any(not g.summary.audit.ok for g in result.generations):
        raise typer.Exit(1)


def _finish_generation(scratch: Path, trace: bool, draw: bool, g: GenerationResult) -> GenerationResult:
    """A generation's folder under the run's scratch folder, written (and its timeline.png and
    trace.perfetto.json drawn) in the process that ran it; what goes back to the command is its
    result without the trace (written, and the largest part of it)."""
    from cluster_sim.kernel.collector import fewer_collections
    from cluster_sim.results import write_generation

    folder = scratch / g.summary.generation
    if not trace:
        g.trace = None
    with fewer_collections():  # the simulation's heap is still large here (kernel/collector.py)
        write_generation(g, folder)
        if draw:
            try:
                from cluster_sim.report.html import draw_generation

                g.drawn = draw_generation(folder, g.trace)  # (drawn from the trace it wrote)
            except Exception as exc:  # noqa: BLE001 - a report that cannot be drawn is a warning
                g.drawn = (None, None, f"{type(exc).__name__}: {exc}")
    g.trace = None
    return g


def _load_for_run(file: Path, sets: list[str], override_file: Path | None, backend: str | None,
                  seed: int | None, workers: int | None) -> Scenario:
    """The scenario with --overrides, --set, then the options that stand for scenario fields; a problem
    an option brings in is blamed on that option (`--seed -1`), not on the file."""
    labels = [f"--set {s}" for s in sets]
    sets = list(sets)
    for option, value, path in (("--backend", backend, "run.backend"), ("--seed", seed, "seed"),
                                ("--workers", workers, "run.workers")):
        if value is not None:
            sets.append(f"{path}={json.dumps(value)}")  # (JSON is YAML: the value as typed, never re-read)
            labels.append(f"{option} {value}")
    try:
        return load_scenario(file, sets, override_file, override_labels=labels)
    except ScenarioError as exc:
        error(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _check_generations(file: Path, sc: Scenario, asked: list[str]) -> None:
    """-g names generations, each once, that the scenario runs; a mistake is blamed on -g."""
    if not asked:
        return
    for g in asked:
        if g not in GENERATIONS:
            near = difflib.get_close_matches(g, GENERATIONS, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            error(f"-g {_shown(g)}: not a generation{hint} (choose from {', '.join(GENERATIONS)})")
            raise typer.Exit(EXIT_BAD_INPUT)
    if sc.backup is None:
        error(f"-g {' -g '.join(asked)}: {file} has no backup section (a steady-state run has no generations)")
        raise typer.Exit(EXIT_BAD_INPUT)
    known = sc.backup.generations
    bad = [g for g in asked if g not in known]
    if bad:
        error(f"-g {', '.join(bad)}: not among the generations this scenario runs ({', '.join(known)}: "
               f"backup.generations in {file}); add it there or with --set backup.generations=[...]")
        raise typer.Exit(EXIT_BAD_INPUT)
    if len(set(asked)) != len(asked):
        dup = sorted({g for g in asked if asked.count(g) > 1})
        error(f"-g {', '.join(dup)}: given twice")
        raise typer.Exit(EXIT_BAD_INPUT)


def _ray_address(file: Path, sc: Scenario, address: str | None, given: bool) -> tuple[str | None, str | None]:
    """The Ray cluster to join and where it comes from (for messages): --address, else the file's
    run.ray_address, else $RAY_ADDRESS; none with the local backend (where an address typed on the
    command line is a mistake)."""
    if sc.run.backend != "ray":
        if given:
            error(f"--address {address}: the run uses the local node backend (run.backend in the scenario), which "
                   f"starts no Ray; add --backend ray to run the nodes on that Ray cluster")
            raise typer.Exit(EXIT_BAD_INPUT)
        return None, None
    if given:
        return address, f"--address {address}"
    if sc.run.ray_address:
        return sc.run.ray_address, f"run.ray_address {sc.run.ray_address} (in {file})"
    return (address, f"$RAY_ADDRESS {address}") if address else (None, None)
