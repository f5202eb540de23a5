"""The answer of a plan: the best feasible trial, the Pareto front, the binding constraint, what made
a plan infeasible, the baseline beside the best, and the answer in words (plan.json, what the
terminal summary and the HTML report show)."""

from __future__ import annotations

import math
from typing import Any

from cluster_sim.studies.plan.spec import PlanSpec

TOP_TRIALS = 15  # trials listed in plan.json / the report


def dominates(a: list[float], b: list[float]) -> bool:
    """a is no worse than b everywhere and better somewhere (keys: smaller is better)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(spec: PlanSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feasible trials no other feasible trial dominates (first of equal points only), by first objective."""
    feasible = [r for r in records if r["feasible"]]
    keys = {id(r): [o.key(v) for o, v in zip(spec.objectives, r["objectives"], strict=True)] for r in feasible}
    front, seen = [], set()
    for r in feasible:
        k = keys[id(r)]
        if any(dominates(keys[id(q)], k) for q in feasible) or tuple(k) in seen:
            continue
        seen.add(tuple(k))
        front.append(r)
    return sorted(front, key=lambda r: keys[id(r)])


def best_record(spec: PlanSpec, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best feasible trial: lowest objective key; with two objectives, the front's best on the first."""
    feasible = [r for r in records if r["feasible"]]
    if not feasible:
        return None
    return min(feasible, key=lambda r: ([o.key(v) for o, v in zip(spec.objectives, r["objectives"], strict=True)],
                                        r["trial"] if r["trial"] is not None else 0))


def binding_constraint(spec: PlanSpec, rec: dict[str, Any],
                       records: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The constraint closest to its limit at `rec` (smallest slack at the worst seed) among those the
    settings move: a constraint whose value was the same in every trial (e.g. failures no setting can
    avoid) and an equality (always exactly at its limit) say nothing about the choice, so they are
    named only when no other constraint is left."""
    if not spec.constraints:
        return None
    ran = [r for r in records or [] if not r["error"]]
    moved = {i for i in range(len(spec.constraints))
             if len({r["constraints"][i]["worst"] for r in ran}) > 1}
    cands = [(i, c, v) for i, (c, v) in enumerate(zip(spec.constraints, rec["constraints"], strict=True))
             if v["slack"] is not None]
    pool = ([x for x in cands if x[1].op != "==" and x[0] in moved] or [x for x in cands if x[1].op != "=="]
            or cands)
    if not pool:
        return None
    i, c, v = min(pool, key=lambda x: x[2]["slack"])
    return {"text": c.text, "metric": c.metric, "op": c.op, "limit": c.limit, "worst": v["worst"],
            "slack": v["slack"], "moved_by_settings": i in moved}


def diagnose_infeasible(spec: PlanSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Why no trial was feasible: the constraints no trial met, or the one met least often."""
    ran = [r for r in records if not r["error"]]
    counts = [sum(1 for r in ran if r["constraints"][i]["met"]) for i in range(len(spec.constraints))]
    never = [c.text for c, n in zip(spec.constraints, counts, strict=True) if n == 0]
    out: dict[str, Any] = {"trials_run": len(ran), "trials_failed": len(records) - len(ran),
                           "met_counts": dict(zip([c.text for c in spec.constraints], counts, strict=True)),
                           "never_met": never, "least_met": None}
    if spec.constraints and not never and ran:
        i = min(range(len(counts)), key=lambda k: counts[k])
        out["least_met"] = {"text": spec.constraints[i].text, "met": counts[i], "of": len(ran)}
    # how close the trials came to each never-met constraint: the best worst-seed value
    closest = {}
    for i, c in enumerate(spec.constraints):
        if c.text in never:
            vals = [r["constraints"][i] for r in ran if r["constraints"][i]["slack"] is not None]
            if vals:
                closest[c.text] = max(vals, key=lambda v: v["slack"])["worst"]
    out["closest"] = closest
    return out


def _comparison(spec: PlanSpec, baseline: dict[str, Any] | None, best: dict[str, Any] | None) -> list[dict]:
    """Rows of the baseline-vs-best table: settings, then objectives, then constraint metrics."""
    rows: list[dict[str, Any]] = []
    base_vals = spec.baseline_values()
    for path, d in spec.domains.items():
        rows.append({"kind": "setting", "name": path, "baseline": base_vals.get(path),
                     "best": best["params"].get(path) if best else None, "domain": d.describe(),
                     "short": d.short()})
    metrics = [(o.metric, f"objective: {o.direction}") for o in spec.objectives]
    metrics += [(m, "") for m in spec.constraint_metrics() if m not in {o.metric for o in spec.objectives}]
    for m, role in metrics:
        row: dict[str, Any] = {"kind": "objective" if role else "metric", "name": m, "role": role,
                               "baseline": baseline["metrics"].get(m) if baseline else None,
                               "best": best["metrics"].get(m) if best else None, "constraints": []}
        for i, c in enumerate(spec.constraints):
            if c.metric == m:
                row["constraints"].append({
                    "text": c.text, "limit": f"{c.op} {fmt_value(c.limit)}", "op": c.op, "value": c.limit,
                    "baseline_met": baseline["constraints"][i]["met"] if baseline else None,
                    "best_met": best["constraints"][i]["met"] if best else None})
        b, x = row["baseline"], row["best"]
        row["change"] = None if b is None or x is None else x - b
        row["change_pct"] = None if b in (None, 0) or x is None else (x - b) / abs(b) * 100
        rows.append(row)
    return rows


def analyse(spec: PlanSpec, records: list[dict[str, Any]], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Everything the terminal summary and the HTML report show (written as plan.json)."""
    best = best_record(spec, records)
    front = pareto_front(spec, records) if spec.pareto else ([best] if best else [])
    feasible = [r for r in records if r["feasible"]]
    summary: dict[str, Any] = {
        "plan": spec.name, "file": str(spec.file), "description": spec.description,
        "scenario": str(spec.scenario_file), "scenario_name": spec.base.get("name"),
        "generation": spec.generation, "seeds": spec.seeds, "fingerprint": spec.fingerprint,
        "search": {a: d.describe() for a, d in spec.domains.items()},
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in spec.objectives],
        "constraints": [c.text for c in spec.constraints],
        "budget": {"trials": spec.trials, "time_s": spec.time_s},
        "sampler": ("NSGA-II" if spec.pareto else "TPE") + f" (Optuna, seed {spec.sampler_seed})",
        "concurrency": spec.concurrency,
        "trials": len(records), "feasible": len(feasible), "failed": sum(1 for r in records if r["error"]),
        "runs": len(records) * len(spec.seeds),
        "baseline": _slim(baseline), "best": _slim(best), "front": [_slim(r) for r in front],
        "binding": binding_constraint(spec, best, records) if best else None,
        "infeasible": None if best else diagnose_infeasible(spec, records),
        "comparison": _comparison(spec, baseline, best),
    }
    if best and baseline and not baseline["error"]:
        imp = []
        for o, b, x in zip(spec.objectives, baseline["objectives"], best["objectives"], strict=True):
            if b is None or x is None:
                imp.append(None)
                continue
            gain = (b - x) if o.direction == "minimize" else (x - b)
            imp.append({"metric": o.metric, "baseline": b, "best": x, "gain": gain,
                        "gain_pct": gain / abs(b) * 100 if b else None})
        summary["improvement"] = imp
    else:
        summary["improvement"] = None
    ranked = sorted(records, key=lambda r: (not r["feasible"], bool(r["error"]),
                                            [o.key(v) if v is not None else math.inf
                                             for o, v in zip(spec.objectives, r["objectives"], strict=True)]))
    summary["top_trials"] = [_slim(r) for r in ranked[:TOP_TRIALS]]
    summary["answer"] = summary_lines(summary)
    return summary


def _slim(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record without its per-seed runs and without the metrics nobody asked for."""
    if rec is None:
        return None
    return {k: v for k, v in rec.items() if k not in ("runs", "metrics", "spread")} | {
        "metrics": {k: v for k, v in rec["metrics"].items() if v is not None}}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The answer in words: improvement, binding constraint, or why nothing was feasible."""
    lines = []
    best, base = summary["best"], summary["baseline"]
    if best is None:
        inf = summary["infeasible"] or {}
        lines.append(f"no feasible trial in {summary['trials']} trials ({summary['runs']} runs).")
        if inf.get("never_met"):
            for text in inf["never_met"]:
                closest = inf.get("closest", {}).get(text)
                near = f"; closest a trial came: {fmt_value(closest)} at its worst seed" if closest is not None else ""
                lines.append(f"no trial met the constraint {text}{near}")
        elif inf.get("least_met"):
            lm = inf["least_met"]
            lines.append(f"every constraint was met by some trial, never all at once; the one met least often: "
                         f"{lm['text']} ({lm['met']} of {lm['of']} trials)")
        if inf.get("trials_failed"):
            lines.append(f"{inf['trials_failed']} trials failed to run (see trials.parquet, column error)")
        return lines
    for imp in summary.get("improvement") or []:
        if imp is None:
            continue
        if imp["gain"] == 0:
            lines.append(f"{imp['metric']}: {fmt_value(imp['best'])}, the same as the scenario as written")
            continue
        word = "better" if imp["gain"] > 0 else "worse"
        pct = f"{abs(imp['gain_pct']):.1f} % " if imp["gain_pct"] is not None else ""
        diff = "less" if imp["best"] < imp["baseline"] else "more"
        lines.append(f"{imp['metric']}: {fmt_value(imp['baseline'])} -> {fmt_value(imp['best'])}: {pct}{word} than the "
                     f"scenario as written ({fmt_value(abs(imp['best'] - imp['baseline']))} {diff})")
    if base and not base["feasible"] and not base["error"]:
        missed = [v["text"] for v in base["constraints"] if not v["met"]]
        lines.append("the scenario as written does not meet: " + ", ".join(missed))
    b = summary.get("binding")
    if b:
        where = ("exactly at its limit" if b["op"] == "==" else
                 f"{abs(b['slack']) * 100:.1f} % {'inside' if b['slack'] >= 0 else 'outside'} its limit")
        lines.append(f"binding constraint: {b['text']} ({fmt_value(b['worst'])} at the worst seed, {where})")
    return lines


def fmt_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
