"""What report.html shows, as plain data for its templates (templates/run.html.j2 and
plan.html.j2): the comparison table (values, marks and explanations from the columns of
report/table.py), the restore verification, each generation's key numbers and timeline, and a
plan's answer. Escaping is the templates' (jinja2 autoescape): nothing here writes markup."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Generation:
    """One generation folder of a results folder, and what drawing it gave."""

    name: str
    folder: Path
    summary: dict[str, Any]
    timeline_png: Path | None = None
    perfetto_json: Path | None = None
    error: str = ""


def _num(x: Any, fmt: str = "{:,.0f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def _hours(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 3600:
        return f"{s / 3600:,.2f} h"
    if s >= 60:
        return f"{s / 60:,.1f} min"
    return f"{s:,.1f} s"


def _png_size(png: Path) -> tuple[int, int]:
    """Width and height in pixels, from the PNG's IHDR chunk (the page shows it at most that wide)."""
    with open(png, "rb") as fh:
        head = fh.read(24)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


# ----------------------------------------------------------------------------------------------
# a results folder
# ----------------------------------------------------------------------------------------------
def _summaries(gens: list[Generation]):  # type: ignore[no-untyped-def]
    """Summary models for the comparison table (fields this version does not know are left out)."""
    from cluster_sim.results import Summary

    out = []
    for g in gens:
        known = {k: v for k, v in g.summary.items() if k in Summary.model_fields}
        out.append(Summary.model_validate(known))
    return out


def comparison_view(gens: list[Generation]) -> dict[str, Any]:
    """The comparison table: one row per column of report/table.py, a cell per generation (marked
    best or bad as the column says), the column's explanation; and each generation's failures."""
    from cluster_sim.report.table import best_rows, cell, columns_for

    try:
        summaries = _summaries(gens)
    except Exception as exc:  # an older or newer summary.json: say so rather than fail the page
        return {"error": str(exc)}
    columns = columns_for(summaries)
    best = best_rows(summaries, columns)
    rows = []
    for col in columns[1:]:
        cells = []
        for i, s in enumerate(summaries):
            cls = "num best" if i in best.get(col.header, set()) else "num"
            cells.append({"text": cell(col, s), "cls": "num bad" if col.is_bad(s) else cls})
        rows.append({"header": col.header, "cells": cells, "explain": col.explain})
    failures = [(s.generation, ", ".join(f"{k} {v}" for k, v in s.failures_by_reason.items()))
                for s in summaries if s.failures_by_reason]
    return {"error": None, "generations": [s.generation for s in summaries], "rows": rows, "failures": failures}


def verification_view(gens: list[Generation]) -> dict[str, Any] | None:
    """The restore verification of every generation that has one: a table (result x generation,
    torn, lost and mismatched counts marked bad), or each generation's as JSON if it is not a mapping."""
    have = [g for g in gens if "verification" in g.summary]
    if not have:
        return None
    dicts = {g.name: g.summary["verification"] for g in have}
    view: dict[str, Any] = {"notes": consistent_count_notes(have), "generations": list(dicts), "rows": [],
                            "raw": []}
    if not all(isinstance(v, dict) for v in dicts.values()):
        view["raw"] = [(n, json.dumps(v, indent=2)) for n, v in dicts.items()]
        return view
    keys: list[str] = []
    for v in dicts.values():
        keys += [k for k in v if k not in keys]
    for k in keys:
        cells = []
        for v in dicts.values():
            x = v.get(k)
            bad = isinstance(x, int | float) and x and any(w in k for w in ("torn", "lost", "mismatch", "fail"))
            text = json.dumps(x) if isinstance(x, dict | list) else ("-" if x is None else str(x))
            cells.append({"text": text, "cls": "num bad" if bad else "num"})
        view["rows"].append({"label": k.replace("_", " "), "cells": cells})
    return view


def consistent_count_notes(gens: list[Generation]) -> list[str]:
    """Per generation whose counts differ: how the comparison's outcomes add up to the verified
    app-consistent count (with a schedule: the last job's, as the comparison shows)."""
    lines = []
    for g in gens:
        s = g.summary
        jobs = s.get("jobs") or []
        last = jobs[-1] if len(jobs) > 1 and isinstance(jobs[-1], dict) else s
        o, v = last.get("outcomes") or {}, last.get("verification") or {}
        if not isinstance(o, dict) or not isinstance(v, dict) or "app_consistent" not in v:
            continue
        app, off, saved = o.get("app_consistent", 0), o.get("offline", 0), o.get("saved_state", 0)
        verified = v["app_consistent"]
        if verified == app:
            continue
        job = f" (last job of {len(jobs)})" if last is not s else ""
        line = (f"{g.name}{job}: {app:,} app-consistent + {off:,} offline + {saved:,} saved-state = "
                f"{app + off + saved:,}; verified app-consistent: {verified:,}")
        if verified != app + off + saved:
            line += " (the difference: see torn, lost writes and claim mismatches)"
        lines.append(line)
    return lines


def generation_view(g: Generation) -> dict[str, Any]:
    """One generation's section: its title, key numbers, the timeline (embedded) and the trace."""
    s = g.summary
    title = f"{g.name}"
    if s.get("vm_count") is not None:
        title += f": {s.get('vm_count')} VMs on {s.get('node_count')} nodes, {s.get('csv_count')} CSVs"
    picture = None
    if g.timeline_png is not None and g.timeline_png.is_file():
        w, h = _png_size(g.timeline_png)
        picture = {"uri": _data_uri(g.timeline_png), "width": w, "height": h}
    return {"name": g.name, "title": title, "error": g.error, "key": key_lines(s), "timeline": picture,
            "perfetto": g.perfetto_json is not None}


def key_lines(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, value, what it means) for the numbers a reader looks at first."""
    o = s.get("outcomes") or {}
    lat = s.get("io_latency_ms") or {}
    mig = s.get("migrations") or {}
    leaks = s.get("leaks") or {}
    window, bound = s.get("backup_window_s"), s.get("window_lower_bound_s")
    lines = []
    if window is not None:
        ratio = f" ({window / bound:.2f} x the lower bound of {_hours(bound)})" if bound else ""
        verdict = ("copy-bound: only a bigger pipe or fewer bytes helps" if bound and window <= 1.1 * bound
                   else "coordination (snapshots, locks, CSV pinning, retries) costs time beyond the copy")
        lines.append(("Backup window", f"{_hours(window)}{ratio}", verdict))
    lines.append(("Outcomes", ", ".join(f"{v} {k.replace('_', '-')}" for k, v in o.items()) or "-",
                  "what a restore gives per VM"))
    if s.get("failures_by_reason"):
        lines.append(("Failures", ", ".join(f"{k} {v}" for k, v in s["failures_by_reason"].items()),
                      "why the failed VMs have no backup"))
    lines.append(("Storage snapshots",
                  f"{_num(s.get('hw_snapshots_created'))} hardware + {_num(s.get('sw_snapshots_created'))} software "
                  f"in {_num(s.get('snapshot_sets'))} sets; peak {_num(s.get('peak_pending_snapshots'))} pending, "
                  f"peak {_num(s.get('peak_snapshots_per_lun'))} per LUN",
                  "array load; a long queue pushes commits past the hold-writes limit"))
    lines.append(("Redirected access", f"{_num(s.get('redirected_s_total'))} s over all CSVs, at most "
                  f"{_hours(s.get('redirected_s_max_csv'))} on one",
                  "non-coordinator nodes send their I/O over the cluster network meanwhile"))
    lines.append(("Auto-recovery", f"{_num(s.get('host_mounts'))} host mounts, {_num(s.get('scsi_hot_adds'))} SCSI hot-adds",
                  "guest disks exposed to the host / AutoRecovery disks added to the VM"))
    lines.append(("VM I/O latency p99", f"{_num(lat.get('baseline_p99'), '{:,.2f}')} ms before, "
                  f"{_num(lat.get('backup_p99'), '{:,.2f}')} ms during the backup",
                  "what applications feel from copy streams, copy-on-write and redirected I/O"))
    lines.append(("VM downtime", f"{_num(s.get('vm_downtime_s_total'))} s summed over VMs",
                  "saved-state pauses, migration blackouts and failover outages"))
    lines.append(("On AVHDX", f"{_num((s.get('avhdx_vm_s') or 0) / 3600, '{:,.1f}')} VM-hours",
                  "time VMs ran on a differencing disk because of the backup"))
    if mig.get("requested"):
        md = s.get("migration_downtime_ms") or {}
        lines.append(("Live migrations", ", ".join(f"{v} {k}" for k, v in mig.items())
                      + f"; blackout p50 {_num(md.get('p50'), '{:,.0f}')} ms, max {_num(md.get('max'), '{:,.0f}')} ms",
                      "moves during the backup: refused ones waited for a VM's snapshot critical section"))
    nf = s.get("node_failures") or []
    if nf:
        lines.append(("Node failures", "; ".join(f"{f.get('node')} ({f.get('how')}) detected at "
                                                 f"{_hours(f.get('detected_s'))}, {f.get('vms_down')} VMs down"
                                                 for f in nf)
                      + f"; {_num(s.get('vms_restarted'))} VMs restarted, {_num(s.get('retried_vms'))} VMs retried",
                      "failover restarts the VMs on survivors; in-flight backup steps fail and are retried"))
    total_leaks = sum(v for v in leaks.values() if isinstance(v, int | float))
    lines.append(("Leaks", "none" if not total_leaks else ", ".join(f"{v} {k}" for k, v in leaks.items() if v),
                  "things taken and never released"))
    if s.get("torn_undetected"):
        lines.append(("Torn, undetected", _num(s.get("torn_undetected")),
                      "claimed consistent but silently torn (hold-writes overrun)"))
    audit = s.get("audit") or {}
    lines.append(("Audit", "ok" if audit.get("ok") else "; ".join(audit.get("violations", [])[:5]),
                  "every VM one outcome, everything released or counted, limits kept"))
    return lines


def run_page(folder: Path, gens: list[Generation]) -> dict[str, Any]:
    """Everything templates/run.html.j2 shows."""
    first = gens[0].summary
    scenario = first.get("scenario", folder.name)
    sub = (f"{first.get('vm_count', '?')} VMs on {first.get('node_count', '?')} nodes, "
           f"{first.get('csv_count', '?')} CSVs, seed {first.get('seed', '?')}; generations: "
           + ", ".join(g.name for g in gens) + ". All times are simulated.")
    return {"heading": f"{scenario}: backup report", "sub": sub,
            "comparison": comparison_view(gens) if (folder / "comparison.csv").is_file() else None,
            "verification": verification_view(gens), "generations": [generation_view(g) for g in gens]}


# ----------------------------------------------------------------------------------------------
# a plan folder (`cluster-sim plan`): the answer, the baseline beside the best trial, the trials
# ----------------------------------------------------------------------------------------------
def plan_page(folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Everything templates/plan.html.j2 shows, from plan.json, pareto.png and best.yaml."""
    budget = summary.get("budget") or {}
    sub = (f"{summary.get('scenario_name')} ({summary.get('scenario')}), {summary.get('generation')}; "
           f"{summary.get('trials')} trials of up to {budget.get('trials')}, {summary.get('feasible')} feasible, "
           f"{summary.get('failed')} failed; seeds {', '.join(map(str, summary.get('seeds', [])))} per trial; "
           f"{summary.get('sampler')} on Ray Tune. Objective: "
           + " and ".join(f"{o['direction']} {o['metric']}" for o in summary.get("objectives", []))
           + ". Constraints: " + (", ".join(summary.get("constraints") or []) or "none")
           + ". All times are simulated.")
    best = summary.get("best")
    rows = []
    for r in summary.get("comparison", []):
        row = dict(r)
        if r["kind"] != "setting":
            limits = r.get("constraints") or []
            row["baseline_ok"] = None if not limits else all(c["baseline_met"] for c in limits)
            row["best_ok"] = None if not limits or not best else all(c["best_met"] for c in limits)
            row["change_text"] = "" if r.get("change") is None else (
                f"{r['change_pct']:+.1f} %" if r.get("change_pct") is not None else f"{r['change']:+g}")
            row["what"] = "; ".join(([r["role"]] if r.get("role") else []) + [c["text"] for c in limits])
        rows.append(row)
    inf = summary.get("infeasible") or {}
    png = folder / (summary.get("outputs", {}).get("plot") or "pareto.png")
    plot = None
    if png.is_file():
        what = ("every trial in objective space, the Pareto front of the feasible ones and the baseline"
                if len(summary.get("objectives", [])) == 2 else
                "the objective of each trial in the order they ran, the best feasible so far and the baseline")
        plot = {"uri": _data_uri(png), "what": what, "name": png.name}
    best_file = folder / "best.yaml"
    return {
        "heading": f"{summary.get('plan', folder.name)}: backup settings plan", "sub": sub,
        "answer": summary.get("answer") or [], "best": best, "comparison": rows,
        "met_counts": list((inf.get("met_counts") or {}).items()), "trials_run": inf.get("trials_run"),
        "plot": plot,
        "best_yaml": best_file.read_text(encoding="utf-8") if best and best_file.is_file() else None,
        "trials": summary.get("top_trials") or [], "params": list(summary.get("search", {})),
        "objectives": [o["metric"] for o in summary.get("objectives", [])],
        "constraints": summary.get("constraints", []),
    }
