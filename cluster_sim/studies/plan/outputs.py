"""What a plan writes into its folder: trials.parquet, runs.parquet, best.yaml (and front/*.yaml
for two objectives), pareto.png and plan.json."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster_sim.studies.columns import (
    METRIC_KINDS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
)
from cluster_sim.studies.plan.answer import fmt_value
from cluster_sim.studies.plan.spec import PlanSpec
from cluster_sim.studies.store import _write_atomically, write_parquet

PLAN_JSON = "plan.json"
STATE_FILE = "plan-state.json"
BASELINE_FILE = "baseline.json"
TRIALS_FILE = "trials.parquet"
RUNS_FILE = "runs.parquet"
BEST_FILE = "best.yaml"
FRONT_DIR = "front"
PARETO_PNG = "pareto.png"
REPORT_HTML = "report.html"
TUNE_DIR = "tune"
EXPERIMENT = "search"
TUNE_LOG = "tune.log"
OUTPUTS = (PLAN_JSON, STATE_FILE, BASELINE_FILE, TRIALS_FILE, RUNS_FILE, BEST_FILE, PARETO_PNG, REPORT_HTML,
           TUNE_LOG)


@dataclass
class PlanOutcome:
    out_dir: Path
    spec: PlanSpec
    records: list[dict[str, Any]]
    baseline: dict[str, Any] | None
    summary: dict[str, Any]
    wall_s: float
    interrupted: bool = False
    out_of_time: bool = False
    restored: int = 0  # trials found done in DIR (--resume)
    cpus: int = 0


def clear_outputs(out_dir: Path) -> None:
    """Remove what a previous plan wrote into DIR (only our files)."""
    for name in OUTPUTS:
        (out_dir / name).unlink(missing_ok=True)
    for folder in (TUNE_DIR, FRONT_DIR):
        if (out_dir / folder).is_dir():
            shutil.rmtree(out_dir / folder)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    _write_atomically(path, json.dumps(data, indent=2, default=str) + "\n")


def trial_columns(spec: PlanSpec) -> list[tuple[str, str]]:
    cols = [("trial", "int"), ("trial_id", "str"), ("feasible", "bool"), ("best", "bool"), ("on_front", "bool"),
            ("error", "str")]
    cols += [(a, d.cell_kind) for a, d in spec.domains.items()]
    for c in spec.constraints:
        cols += [(f"met: {c.text}", "bool"), (f"worst: {c.text}", "float")]
    cols += [("seeds", "int"), ("wall_s", "float"), ("nodes", "json"), ("workers", "json")]
    for m in METRIC_KINDS:
        if m != "wall_s":
            cols += [(m, "float"), (f"{m}.min", "float"), (f"{m}.max", "float")]
    return cols


def trial_row(spec: PlanSpec, rec: dict[str, Any], best_id: Any, front_ids: set) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": rec["trial"], "trial_id": rec["trial_id"], "feasible": rec["feasible"],
                           "best": rec["trial_id"] == best_id, "on_front": rec["trial_id"] in front_ids,
                           "error": rec["error"], "seeds": len(rec["seeds"]), "wall_s": rec["wall_s"],
                           "nodes": rec["nodes"], "workers": rec["workers"]}
    row.update({a: rec["params"].get(a) for a in spec.domains})
    for c, v in zip(spec.constraints, rec["constraints"], strict=True):
        row[f"met: {c.text}"] = v["met"]
        row[f"worst: {c.text}"] = v["worst"]
    for m in METRIC_KINDS:
        row[m] = rec["metrics"].get(m)
        lo, hi = rec["spread"].get(m, [None, None])
        row[f"{m}.min"], row[f"{m}.max"] = lo, hi
    return row


def run_columns(spec: PlanSpec) -> list[tuple[str, str]]:
    return ([("role", "str"), ("trial", "int"), ("run_id", "str")]
            + [(a, d.cell_kind) for a, d in spec.domains.items()]
            + [("seed", "int"), ("generation", "str")] + RUN_COLUMNS + [("worker", "str")] + SUMMARY_COLUMNS)


def best_overrides(spec: PlanSpec, rec: dict[str, Any]) -> dict[str, Any]:
    """The overrides that turn the scenario file into the trial's scenario (for `run --overrides`)."""
    out = dict(spec.fixed_overrides)
    out["backup.generations"] = [spec.generation]
    out.update(rec["params"])
    return out


def write_override_file(path: Path, spec: PlanSpec, rec: dict[str, Any], what: str) -> None:
    import yaml

    rel = os.path.relpath(spec.scenario_file.absolute(), path.parent.absolute())
    objs = ", ".join(f"{o.metric} {fmt_value(v)}" for o, v in zip(spec.objectives, rec["objectives"], strict=True))
    lines = [f"# cluster-sim plan {spec.name}: {what} (trial {rec['trial']})",
             f"# {objs} (mean over seeds {', '.join(map(str, spec.seeds))}; {spec.generation})"]
    for v in rec["constraints"]:
        lines.append(f"#   {v['text']}: {fmt_value(v['worst'])} at the worst seed")
    lines.append(f"# apply: cluster-sim run {rel} --overrides {path.name} --seed {spec.seeds[0]}")
    body = yaml.safe_dump(best_overrides(spec, rec), sort_keys=False, default_flow_style=None)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n" + body, encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(outcome: PlanOutcome) -> None:
    spec, out_dir, records, summary = outcome.spec, outcome.out_dir, outcome.records, outcome.summary
    best = summary["best"]
    best_id = best["trial_id"] if best else None
    front_ids = {r["trial_id"] for r in summary["front"]}
    write_parquet(out_dir / TRIALS_FILE, [trial_row(spec, r, best_id, front_ids) for r in records],
                  trial_columns(spec))
    runs = []
    for role, recs in (("baseline", [outcome.baseline] if outcome.baseline else []), ("trial", records)):
        for rec in recs:
            for row in rec.get("runs") or []:
                runs.append({**row, "role": role, "trial": rec["trial"]})
    write_parquet(out_dir / RUNS_FILE, runs, run_columns(spec))
    (out_dir / BEST_FILE).unlink(missing_ok=True)
    if (out_dir / FRONT_DIR).is_dir():
        shutil.rmtree(out_dir / FRONT_DIR)
    by_id = {r["trial_id"]: r for r in records}
    if best_id is not None:
        write_override_file(out_dir / BEST_FILE, spec, by_id[best_id],
                            "the best feasible trial" + (" on the first objective" if spec.pareto else ""))
    if spec.pareto and front_ids:
        (out_dir / FRONT_DIR).mkdir()
        for r in summary["front"]:
            write_override_file(out_dir / FRONT_DIR / f"trial-{r['trial']}.yaml", spec, by_id[r["trial_id"]],
                                "a trial on the Pareto front")
    summary["outputs"] = {"trials": TRIALS_FILE, "runs": RUNS_FILE, "best": BEST_FILE if best_id else None,
                          "front": sorted(p.name for p in (out_dir / FRONT_DIR).glob("*.yaml"))
                          if spec.pareto else [], "plot": PARETO_PNG}
    summary["wall_s"] = outcome.wall_s
    write_plot(spec, records, summary, out_dir / PARETO_PNG)
    _write_json(out_dir / PLAN_JSON, summary)


def write_plot(spec: PlanSpec, records: list[dict[str, Any]], summary: dict[str, Any], target: Path) -> Path:
    """Two objectives: every trial in objective space (feasible, infeasible), the front, the baseline.
    One objective: the objective of each trial in order, with the best feasible so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    ok = [r for r in records if r["feasible"]]
    bad = [r for r in records if not r["feasible"] and not r["error"]]
    base = summary.get("baseline")
    if spec.pareto:
        def xy(rs: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
            return [r["objectives"][0] for r in rs], [r["objectives"][1] for r in rs]

        ax.scatter(*xy(bad), marker="x", color="0.6", label=f"infeasible ({len(bad)})")
        ax.scatter(*xy(ok), color="C0", label=f"feasible ({len(ok)})")
        front = summary["front"]
        if front:
            fx, fy = xy(front)
            ax.plot(fx, fy, color="C3", marker="o", drawstyle="steps-post" if len(front) > 1 else "default",
                    label=f"Pareto front ({len(front)})")
        if base and base["objectives"][0] is not None:
            ax.scatter([base["objectives"][0]], [base["objectives"][1]], marker="*", s=220, color="C1",
                       edgecolor="k", zorder=5, label="baseline (scenario as written)")
        ax.set_xlabel(f"{spec.objectives[0].metric} ({spec.objectives[0].direction})")
        ax.set_ylabel(f"{spec.objectives[1].metric} ({spec.objectives[1].direction})")
    else:
        o = spec.objectives[0]
        ax.scatter([r["trial"] for r in bad], [r["objectives"][0] for r in bad], marker="x", color="0.6",
                   label=f"infeasible ({len(bad)})")
        ax.scatter([r["trial"] for r in ok], [r["objectives"][0] for r in ok], color="C0",
                   label=f"feasible ({len(ok)})")
        xs, ys, cur = [], [], None
        for r in sorted(records, key=lambda r: r["trial"] if r["trial"] is not None else 0):
            if r["feasible"] and (cur is None or o.key(r["objectives"][0]) < o.key(cur)):
                cur = r["objectives"][0]
            if cur is not None:
                xs.append(r["trial"])
                ys.append(cur)
        if xs:
            ax.plot(xs, ys, color="C3", drawstyle="steps-post", label="best feasible so far")
        if base and base["objectives"][0] is not None:
            ax.axhline(base["objectives"][0], color="C1", linestyle="--", label="baseline (scenario as written)")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{o.metric} ({o.direction}, mean over {len(spec.seeds)} seeds)")
    failed = sum(1 for r in records if r["error"])
    title = f"{spec.name}: {len(records)} trials of {spec.generation}"
    if failed:
        title += f", {failed} failed (not shown)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = target.with_name(target.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, target)
    return target
