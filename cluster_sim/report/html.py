"""The report of a results folder: per generation `timeline.png` and `trace.perfetto.json`, and
`report.html`, one self-contained page (images embedded as data URIs, no network, no script).

`build_report(folder)` works on a saved results folder alone: it reads what `cluster-sim run`
wrote (summary.json, vms.csv, csvs.csv, latency.csv, trace.jsonl) and never re-runs anything. The
page is rendered from the jinja2 templates in templates/ (run.html.j2, or plan.html.j2 for a plan
folder) with the data report/page.py prepares.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cluster_sim.report import perfetto, timeline
from cluster_sim.report.page import Generation, consistent_count_notes, plan_page, run_page
from cluster_sim.report.spans import load, natural_key
from cluster_sim.scenario import GENERATIONS

GENERATION_ORDER = [*GENERATIONS, "steady"]
RUN_JSON = "run.json"  # written last by `cluster-sim run`: the run the folder holds
PLAN_JSON = "plan.json"  # what a plan writes for its page (and the terminal summary)

__all__ = ["Generation", "Report", "ReportError", "build_plan_report", "build_report", "consistent_count_notes",
           "draw_generation", "generation_folders", "left_out", "render_html", "render_plan_html"]


@dataclass
class Report:
    folder: Path
    html: Path
    generations: list[Generation]
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


class ReportError(Exception):
    """The folder is not a results folder (nothing to report on)."""


# ----------------------------------------------------------------------------------------------
# the folder and its pictures
# ----------------------------------------------------------------------------------------------
def generation_folders(folder: Path) -> list[Path]:
    """Subfolders holding a summary.json, in comparison.csv's order (else the generations' order);
    where the folder has a run.json, only the generations of that run (the report never mixes runs:
    see `left_out`)."""
    found = {p.name: p for p in folder.iterdir() if p.is_dir() and (p / "summary.json").is_file()}
    found = {n: p for n, p in found.items() if n not in left_out(folder, found)}
    order: list[str] = []
    comp = folder / "comparison.csv"
    if comp.is_file():
        with open(comp, newline="", encoding="utf-8") as fh:
            order = [r.get("generation", "") for r in csv.DictReader(fh)]
    rank = {g: i for i, g in enumerate(order + [g for g in GENERATION_ORDER if g not in order])}
    return [found[n] for n in sorted(found, key=lambda n: (rank.get(n, len(rank)), natural_key(n)))]


def draw_generation(gf: Path, trace: Any = None) -> tuple[Path | None, Path | None, str]:
    """timeline.png and trace.perfetto.json of one generation folder: (png, json, error); `trace`:
    the generation's own trace, whose trace.jsonl and spans.jsonl the folder holds (spans.load)."""
    png = pj = None
    try:
        tl = load(gf, trace)
        png = timeline.render(tl, gf / "timeline.png")
        pj = perfetto.write(tl, gf / "trace.perfetto.json")
    except Exception as exc:  # one generation's failure must not hide the others
        return png, pj, f"{type(exc).__name__}: {exc}"
    return png, pj, ""


def drawing_processes(n_generations: int) -> int:
    """Processes drawing generations side by side: one per core (forked), 1 = in this process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n_generations < 2 or cores < 2 or "fork" not in mp.get_all_start_methods():
        return 1
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return 1  # never fork a process that holds a Ray connection
    return min(cores, n_generations)


def _draw_all(gens: list[Generation], drawn: dict[str, tuple[Path | None, Path | None, str]] | None = None) -> None:
    """Draw every generation, side by side in forked processes when there are cores for it (each
    picture is a separate matplotlib figure written to its own folder: the same files either way).
    drawn: generations whose pictures were drawn already (by the run, where each generation ran)."""
    drawn = drawn or {}
    for g in gens:
        if g.name in drawn:
            g.timeline_png, g.perfetto_json, g.error = drawn[g.name]
    gens = [g for g in gens if g.name not in drawn]
    n = drawing_processes(len(gens))
    if n == 1:
        results = [draw_generation(g.folder) for g in gens]
    else:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # a forked process must not write this one's buffered output again
        with ProcessPoolExecutor(n, mp_context=mp.get_context("fork")) as pool:
            futures = [pool.submit(draw_generation, g.folder) for g in gens]
            results = []
            for f in futures:
                try:
                    results.append(f.result())
                except Exception as exc:  # noqa: BLE001 - the drawing process died
                    results.append((None, None, f"{type(exc).__name__}: {exc}"))
    for g, (png, pj, error) in zip(gens, results, strict=True):
        g.timeline_png, g.perfetto_json, g.error = png, pj, error


def left_out(folder: Path, found: dict[str, Path] | None = None) -> dict[str, str]:
    """Generation folders that are not of the run the folder's run.json describes, and why: not among
    its generations, or a summary.json of another scenario or seed (copied in by hand). Empty without
    a readable run.json."""
    try:
        info = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(info, dict) or not isinstance(info.get("generations"), list):
        return {}
    if found is None:
        found = {p.name: p for p in folder.iterdir() if p.is_dir() and (p / "summary.json").is_file()}
    why: dict[str, str] = {}
    for name, gf in found.items():
        if name not in info["generations"]:
            why[name] = f"not a generation of the run in {RUN_JSON} ({', '.join(map(str, info['generations']))})"
            continue
        try:
            s = json.loads((gf / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # (build_report says it is unreadable)
        if (s.get("scenario"), s.get("seed")) != (info.get("scenario"), info.get("seed")):
            why[name] = (f"summary.json of scenario {s.get('scenario')} seed {s.get('seed')}, not of the run in "
                         f"{RUN_JSON} ({info.get('scenario')} seed {info.get('seed')})")
    return why


# ----------------------------------------------------------------------------------------------
# building
# ----------------------------------------------------------------------------------------------
def build_report(folder: str | Path, drawn: dict[str, tuple[Path | None, Path | None, str]] | None = None) -> Report:
    """Write timeline.png and trace.perfetto.json into every generation folder, then report.html
    (a plan folder, with a plan.json and no generation folders, gets the plan's page). drawn: the
    generations (by folder name) whose pictures are drawn already: (timeline.png, perfetto, error)."""
    t0 = time.perf_counter()
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: not a folder")
    if (folder / PLAN_JSON).is_file() and not generation_folders(folder):
        return build_plan_report(folder)
    gens: list[Generation] = []
    errors: list[str] = [f"{name}: left out: {why}" for name, why in sorted(left_out(folder).items())]
    for gf in generation_folders(folder):
        try:
            summary = json.loads((gf / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            errors.append(f"{gf.name}: summary.json unreadable: {exc}")
            continue
        gens.append(Generation(gf.name, gf, summary))
    if not gens:
        raise ReportError(f"{folder}: no generation folders (with a summary.json) to report on")
    _draw_all(gens, drawn)
    errors += [f"{g.name}: {g.error}" for g in gens if g.error]
    page = folder / "report.html"
    page.write_text(render_html(folder, gens), encoding="utf-8")
    return Report(folder, page, gens, errors, time.perf_counter() - t0)


def build_plan_report(folder: Path) -> Report:
    """report.html of a plan folder, from its plan.json, pareto.png and best.yaml (nothing re-run)."""
    t0 = time.perf_counter()
    try:
        summary = json.loads((folder / PLAN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{folder / PLAN_JSON}: unreadable: {exc}") from None
    page = folder / "report.html"
    page.write_text(render_plan_html(folder, summary), encoding="utf-8")
    return Report(folder, page, [], [], time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _templates():  # type: ignore[no-untyped-def]
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("cluster_sim.report", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = _plan_num
    return env


def _plan_num(v: Any) -> str:
    from cluster_sim.studies.plan import fmt_value  # (the terminal summary's format)

    return fmt_value(v)


def render_html(folder: Path, gens: list[Generation]) -> str:
    """report.html of a results folder."""
    return _templates().get_template("run.html.j2").render(run_page(folder, gens))


def render_plan_html(folder: Path, summary: dict[str, Any]) -> str:
    """report.html of a plan folder."""
    return _templates().get_template("plan.html.j2").render(plan_page(folder, summary))
