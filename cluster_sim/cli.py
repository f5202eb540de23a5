"""Command line: `cluster-sim validate FILE`, `cluster-sim run FILE ...`.

Bad input (a scenario file, a --set override, an option) ends with one message naming the
file, the field path and the reason, exit code 2, and nothing written.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.text import Text

from cluster_sim.results import scenario_yaml
from cluster_sim.scenario import GENERATIONS, Scenario, ScenarioError, _shown, load_scenario

app = typer.Typer(add_completion=True, no_args_is_help=True,
                  help="Simulate Hyper-V failover clusters doing host-level VM backups.")
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

EXIT_BAD_INPUT = 2
EXIT_BACKEND_FAILED = 3  # the machinery (a Ray node actor) failed: no result, not a simulated fault
RUN_FILE = "run.json"  # written last into a results folder: the run completed
RESOLVED_FILE = "scenario.resolved.yaml"


def _show_version(value: bool) -> None:
    if value:
        from cluster_sim.version import package_version, sim_version

        out.print(Text(f"cluster-sim {package_version()} (simulator {sim_version()})"), soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="print the version (and the simulator's source hash) and exit")] = False,
) -> None:
    """Simulate Hyper-V failover clusters doing host-level VM backups."""


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


def _complete_generation(incomplete: str) -> list[str]:
    return [g for g in GENERATIONS if g.startswith(incomplete)]


@app.command()
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
    address_given = address is not None and _from_command_line(ctx, "address")
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

    from cluster_sim.cluster.nodes import BackendFailure
    from cluster_sim.report.table import comparison_csv, comparison_md, has_schedule, jobs_md
    from cluster_sim.results import write_generation
    from cluster_sim.simulation import RayUnavailable
    from cluster_sim.simulation import run as run_sim

    started = _now()
    published = False
    said: list[tuple[Console, str, str | None]] = []  # printed after the comparison table
    try:
        with RunProgress(err, sc.name, sc.run.backend, gens, enabled=err.is_terminal and not quiet) as prog:
            try:
                result = run_sim(sc, generations=gens_asked or None, progress=prog.generation,
                                 sim_progress=prog.simulated if prog.enabled else None)
            except RayUnavailable as exc:
                _error(f"{address_from or 'ray'}: {exc}")
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
        if gens_asked and resolved.backup is not None:
            resolved.backup.generations = list(gens_asked)  # -g: what ran, in the order it ran
        (scratch / RESOLVED_FILE).write_text(
            scenario_yaml(resolved, f"{file} with the run's --overrides, --set, --seed, --backend and -g applied"),
            encoding="utf-8")
        if report and sc.backup:  # (a steady-state run has no backup to draw; `cluster-sim report` still can)
            try:  # a report that cannot be drawn is a warning: the run's results and exit code stand
                from cluster_sim.report.html import build_report

                rep = build_report(scratch)
                said.append((out, f"report in {dest / rep.html.name} ({rep.wall_s:.1f} s)", None))
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


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    """Was this option typed on the command line (not taken from the environment)?"""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


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
        _error(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _check_generations(file: Path, sc: Scenario, asked: list[str]) -> None:
    """-g names generations, each once, that the scenario runs; a mistake is blamed on -g."""
    if not asked:
        return
    for g in asked:
        if g not in GENERATIONS:
            near = difflib.get_close_matches(g, GENERATIONS, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            _error(f"-g {_shown(g)}: not a generation{hint} (choose from {', '.join(GENERATIONS)})")
            raise typer.Exit(EXIT_BAD_INPUT)
    if sc.backup is None:
        _error(f"-g {' -g '.join(asked)}: {file} has no backup section (a steady-state run has no generations)")
        raise typer.Exit(EXIT_BAD_INPUT)
    known = sc.backup.generations
    bad = [g for g in asked if g not in known]
    if bad:
        _error(f"-g {', '.join(bad)}: not among the generations this scenario runs ({', '.join(known)}: "
               f"backup.generations in {file}); add it there or with --set backup.generations=[...]")
        raise typer.Exit(EXIT_BAD_INPUT)
    if len(set(asked)) != len(asked):
        dup = sorted({g for g in asked if asked.count(g) > 1})
        _error(f"-g {', '.join(dup)}: given twice")
        raise typer.Exit(EXIT_BAD_INPUT)


def _ray_address(file: Path, sc: Scenario, address: str | None, given: bool) -> tuple[str | None, str | None]:
    """The Ray cluster to join and where it comes from (for messages): --address, else the file's
    run.ray_address, else $RAY_ADDRESS; none with the local backend (where an address typed on the
    command line is a mistake)."""
    if sc.run.backend != "ray":
        if given:
            _error(f"--address {address}: the run uses the local node backend (run.backend in the scenario), which "
                   f"starts no Ray; add --backend ray to run the nodes on that Ray cluster")
            raise typer.Exit(EXIT_BAD_INPUT)
        return None, None
    if given:
        return address, f"--address {address}"
    if sc.run.ray_address:
        return sc.run.ray_address, f"run.ray_address {sc.run.ray_address} (in {file})"
    return (address, f"$RAY_ADDRESS {address}") if address else (None, None)


def _now() -> str:
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")  # ISO 8601, with the UTC offset


def _unusable_out(dest: Path, key: dict[str, Any] | None = None, force: bool = False) -> str | None:
    """Why `dest` cannot take this run's results folder (None: it can). A run replaces the whole folder,
    so an existing one must be empty, or hold this same run's results (a re-run: same scenario, seed,
    overrides and generations), or hold another run's and `force` say to replace them. A folder that
    does not hold results is never replaced."""
    if not dest.exists():
        return None
    if not dest.is_dir():
        return f"{dest} exists and is not a folder"
    items = list(dest.iterdir())
    if not items:
        return None
    ours = (dest / RUN_FILE).is_file() or (dest / "comparison.csv").is_file() or any(
        (p / "summary.json").is_file() for p in items if p.is_dir())
    if not ours:
        return (f"{dest} is a folder that does not hold cluster-sim results (no {RUN_FILE}, comparison.csv or "
                f"*/summary.json); a run replaces the whole folder: choose another --out or empty it")
    if force or key is None:
        return None
    try:
        info = json.loads((dest / RUN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return (f"{dest} holds results that no {RUN_FILE} describes (an older cluster-sim's, or copied in): "
                f"--force replaces them, or choose another --out")
    except (OSError, ValueError) as exc:
        return f"{dest / RUN_FILE} is unreadable ({exc}): --force replaces the folder, or choose another --out"
    differences = _run_differences(info if isinstance(info, dict) else {}, key)
    if differences:
        return (f"{dest} holds the results of another run ({'; '.join(differences)}): --force replaces them, "
                f"or choose another --out")
    return None


def _run_key(sc: Scenario, file: Path, sets: list[str], override_file: Path | None,
             gens: list[str]) -> dict[str, Any]:
    """What makes a run the same run (the backend, the workers and the tool's version do not)."""
    return {"scenario": sc.name, "scenario_path": str(file.resolve()), "seed": sc.seed, "set": list(sets),
            "file": str(override_file.resolve()) if override_file else None, "generations": list(gens)}


def _run_differences(info: dict[str, Any], key: dict[str, Any]) -> list[str]:
    """How the run recorded in a run.json differs from `key` ("what there, what now")."""
    over = info.get("overrides") if isinstance(info.get("overrides"), dict) else {}

    def shown(v: Any) -> str:
        if isinstance(v, list):
            return ", ".join(map(str, v)) or "none"
        return "none" if v is None else str(v)

    pairs = [("scenario", info.get("scenario"), key["scenario"]), ("seed", info.get("seed"), key["seed"]),
             ("--set", over.get("set", []), key["set"]), ("generations", info.get("generations"), key["generations"])]
    if "scenario_path" in info:  # (run.json of an older version lacks these two)
        pairs.insert(1, ("scenario file", info["scenario_path"], key["scenario_path"]))
    if "file" in over:
        pairs.append(("--overrides", over["file"], key["file"]))
    return [f"{what} {shown(there)} there, {shown(now)} now" for what, there, now in pairs if there != now]


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


def _write_run_json(path: Path, sc: Scenario, file: Path, sets: list[str], gens: list[str], started: str,
                    result, key: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from cluster_sim.version import package_version, sim_version

    info = {
        "tool": "cluster-sim",
        "version": package_version(),
        "sim_version": sim_version(),
        "argv": list(sys.argv),
        "scenario_file": str(file),
        "scenario_path": key["scenario_path"],
        "scenario_resolved": RESOLVED_FILE,
        "scenario": sc.name,
        "seed": sc.seed,
        "overrides": {"set": list(sets), "file": key["file"], "generations": list(gens)},
        "backend": result.backend,
        "generations": [g.summary.generation for g in result.generations],
        "audit_ok": all(g.summary.audit.ok for g in result.generations),
        "notes": list(result.notes),
        "started_at": started,
        "ended_at": _now(),
    }
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


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
