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
EXIT_BACKEND_FAILED = 3  # the machinery (a Ray node actor) failed: no result, not a simulated fault
RUN_FILE = "run.json"  # written last into a results folder: the run completed
RESOLVED_FILE = "scenario.resolved.yaml"


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
    problem = _unusable_out(dest)
    if problem:
        _error(f"--out: {problem}")
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
        _error(f"--out: cannot write results beside {dest}: {exc.strerror or exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cluster_sim.cluster.nodes import BackendFailure
    from cluster_sim.report.table import (
        comparison_csv,
        comparison_md,
        has_schedule,
        jobs_md,
        jobs_table,
        rich_table,
    )
    from cluster_sim.results import write_generation
    from cluster_sim.simulation import RayUnavailable
    from cluster_sim.simulation import run as run_sim

    started = _now()
    published = False
    said: list[tuple[Console, str, str | None]] = []  # printed after the comparison table
    try:
        gens = list(generation or (sc.backup.generations if sc.backup else ["steady"]))
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as prog:
            task = prog.add_task(f"{sc.name} on {sc.run.backend}", total=len(gens))

            def progress(gen: str, what: str) -> None:
                if what == "start":
                    prog.update(task, description=f"{sc.name} on {sc.run.backend}: {gen}")
                else:
                    prog.advance(task)

            try:
                result = run_sim(sc, generations=generation or None, progress=progress)
            except RayUnavailable as exc:
                where = f"--ray-address {ray_address}" if ray_address else \
                    f"run.ray_address {sc.run.ray_address}" if sc.run.ray_address else "ray"
                _error(f"{where}: {exc}")
                raise typer.Exit(EXIT_BAD_INPUT) from None
            except BackendFailure as exc:
                _error(f"the Ray node backend failed, no results written: {exc}")
                raise typer.Exit(EXIT_BACKEND_FAILED) from None
        for note in result.notes:
            err.print(Text(f"warning: {note} (results unaffected)", style="yellow"), soft_wrap=True)

        summaries = [g.summary for g in result.generations]
        for g in result.generations:
            if not trace:
                g.trace = None
            write_generation(g, scratch / g.summary.generation)
        if sc.backup:
            (scratch / "comparison.csv").write_text(comparison_csv(summaries))
            (scratch / "comparison.md").write_text(
                comparison_md(summaries) + (f"\nPer job:\n\n{jobs_md(summaries)}" if has_schedule(summaries) else ""))
        resolved = sc.model_copy(deep=True)
        if generation and resolved.backup is not None:
            resolved.backup.generations = list(generation)  # -g: what ran, in the order it ran
        (scratch / RESOLVED_FILE).write_text(scenario_yaml(resolved, file), encoding="utf-8")
        if report and sc.backup:  # (a steady-state run has no backup to draw; `cluster-sim report` still can)
            try:  # a report that cannot be drawn is a warning: the run's results and exit code stand
                from cluster_sim.report.html import build_report

                rep = build_report(scratch)
                said.append((out, f"report in {dest / rep.html.name} ({rep.wall_s:.1f} s)", None))
                said += [(err, f"warning: report: {problem}", "yellow") for problem in rep.errors]
            except Exception as exc:  # noqa: BLE001
                said.append((err, f"warning: report not written: {type(exc).__name__}: {exc}", "yellow"))
        _write_run_json(scratch / RUN_FILE, sc, file, set_ or [], generation or [], started, result)
        _publish(scratch, dest)
        published = True
    finally:
        if not published:
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
    for console, line, style in said:
        console.print(Text(line, style=style or ""), soft_wrap=True)
    out.print(Text(f"results in {dest}/ (wall {result.wall_s:.1f} s)"), soft_wrap=True)
    if any(not g.summary.audit.ok for g in result.generations):
        raise typer.Exit(1)


def _now() -> str:
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")  # ISO 8601, with the UTC offset


def _unusable_out(dest: Path) -> str | None:
    """Why `dest` cannot take a results folder (None: it can). A run replaces the whole folder, so
    an existing one must be empty or hold results of an earlier run."""
    if not dest.exists():
        return None
    if not dest.is_dir():
        return f"{dest} exists and is not a folder"
    items = list(dest.iterdir())
    ours = (dest / RUN_FILE).is_file() or (dest / "comparison.csv").is_file() or any(
        (p / "summary.json").is_file() for p in items if p.is_dir())
    if items and not ours:
        return (f"{dest} is a folder that does not hold cluster-sim results (no {RUN_FILE}, comparison.csv or "
                f"*/summary.json); a run replaces the whole folder: choose another --out or empty it")
    return None


def _clear_stale_scratch(dest: Path) -> None:
    """Remove scratch folders beside `dest` left by runs that were killed (their process is gone)."""
    import re

    pat = re.compile(re.escape(f".{dest.name}.") + r"(?:cluster-sim|old)-(\d+)-")
    for p in dest.parent.iterdir():
        m = pat.match(p.name)
        if m and p.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 with RENAME_EXCHANGE). False where the system
    or the file system cannot; an error of the swap itself raises OSError."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _publish(scratch: Path, dest: Path) -> None:
    """Put the finished folder `scratch` in place of `dest` with one rename; the old folder stays
    until that rename has succeeded, then goes."""
    if not dest.exists():
        os.rename(scratch, dest)
        return
    if _exchange(scratch, dest):
        shutil.rmtree(scratch, ignore_errors=True)  # (it holds the old results now)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-{os.getpid()}-", dir=dest.parent))
    os.rename(dest, old / dest.name)
    try:
        os.rename(scratch, dest)
    except OSError:
        os.rename(old / dest.name, dest)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def scenario_yaml(sc: Scenario, source: Path | None = None) -> str:
    """The effective scenario as YAML: `cluster-sim run` of this text reproduces the run."""
    import yaml

    head = (f"# The effective scenario of this run ({source} with the run's --set, --seed, --backend and -g"
            f" applied).\n# `cluster-sim run` of this file reproduces the results byte for byte.\n")
    return head + yaml.safe_dump(sc.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)


def _write_run_json(path: Path, sc: Scenario, file: Path, sets: list[str], gens: list[str], started: str,
                    result) -> None:  # type: ignore[no-untyped-def]
    import json

    from cluster_sim.version import package_version, sim_version

    info = {
        "tool": "cluster-sim",
        "version": package_version(),
        "sim_version": sim_version(),
        "argv": list(sys.argv),
        "scenario_file": str(file),
        "scenario_resolved": RESOLVED_FILE,
        "scenario": sc.name,
        "seed": sc.seed,
        "overrides": {"set": list(sets), "generations": list(gens)},
        "backend": result.backend,
        "generations": [g.summary.generation for g in result.generations],
        "audit_ok": all(g.summary.audit.ok for g in result.generations),
        "notes": list(result.notes),
        "started_at": started,
        "ended_at": _now(),
    }
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


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
