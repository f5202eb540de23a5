"""The report of a results folder: per generation `timeline.png` and `trace.perfetto.json`, and
`report.html`, one self-contained page (images embedded as data URIs, no network).

`build_report(folder)` works on a saved results folder alone: it reads what `cluster-sim run`
wrote (summary.json, vms.csv, csvs.csv, latency.csv, trace.jsonl) and never re-runs anything.

The page records its own script errors and failed loads into `#console-errors` and, once
loaded, sets `data-loaded`, `data-images`, `data-broken-images` and `data-min-image-scale` (the
smallest shown width / drawn width of its pictures) on `#page-status` (which shows no text), so a
headless browser's `--dump-dom` tells whether it rendered cleanly and at what scale.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster_sim.report import perfetto, timeline
from cluster_sim.report.spans import load, natural_key

GENERATION_ORDER = ["ws2008r2", "ws2012", "ws2012r2", "ws2016", "steady"]

# One line per comparison column: what the number tells a backup architect (README's table).
EXPLAIN = {
    "window (h)": "From the start of the job until the last VM has its outcome, retries included: the backup window.",
    "lower bound (h)": "Bytes copied over the narrowest pipe on the copy path; a window close to it is copy-bound, "
                       "far above it means coordination (snapshots, locks, CSV pinning, retries) costs the time.",
    "hw snapshots": "Hardware (LUN) snapshots the array had to create.",
    "snapshot sets": "VSS shadow-copy sets created; each node creates one at a time.",
    "peak pending snaps": "Most snapshot requests queued at the array at once; a long queue pushes commits past "
                          "the 10 s hold-writes limit.",
    "peak snaps/LUN": "Most snapshots existing on one LUN at once, against the array's per-LUN limit.",
    "host mounts": "VHDs mounted on the hosts by auto-recovery; each exposes guest disks to the host and costs "
                   "more the more are mounted.",
    "SCSI hot-adds": "AutoRecovery disks hot-added to VMs (ws2012r2); a VM without a SCSI controller fails here "
                     "(Event 10103).",
    "redirected (s)": "Seconds CSVs spent in redirected access, all CSVs together: non-coordinator I/O goes over "
                      "the cluster network meanwhile.",
    "app-consistent": "VMs backed up application-consistent (guest VSS).",
    "crash-consistent": "VMs backed up crash-consistent (no guest VSS, or a standard-checkpoint fallback).",
    "saved-state": "VMs paused in saved state for their snapshot: consistent, but down meanwhile.",
    "offline": "VMs that were not running; their files are copied as they are.",
    "failed": "VMs without a backup after every retry (reasons below the table).",
    "torn (undetected)": "Backups claimed consistent but silently torn (ws2008r2 hold-writes overrun).",
    "VM downtime (s)": "Seconds VMs were not running, summed: saved-state pauses, migration blackouts, failovers.",
    "full window (h)": "With a schedule: the window of the full backup (the mean if there are several).",
    "full lower bound (h)": "The full's bytes over the narrowest pipe on the copy path.",
    "incr. window, mean (h)": "With a schedule: the mean window of the incremental jobs (nights); never added "
                              "to the full's.",
    "incr. lower bound, mean (h)": "The incrementals' bytes over the narrowest pipe, averaged: far below the "
                                   "window means snapshots and coordination, not the copy, set the night.",
    "VMs per snapshot": "VM captures per hardware LUN snapshot: batching, split by host and CSV (ws2016: every VM "
                        "of a LUN in one set).",
    "hold-writes overruns": "Snapshot sets whose writes were held past the 10 s limit (waiting behind other "
                            "requests at the array counts): each fails its VMs, who are retried.",
    "retries": "Attempts after the first, all VMs together (a retry waits retry_wait_s).",
    "full copies in incrementals": "VMs copied in full during incremental jobs: no change tracking, or its map "
                                   "lost by a host crash or a move (vendor filter before 2016).",
    "latency p99 before (ms)": "VM I/O latency p99 in steady state before the backup.",
    "latency p50 during (ms)": "VM I/O latency p50 (over VMs and time) while the backup runs.",
    "latency p99 during (ms)": "VM I/O latency p99 while the backup runs: copy streams, copy-on-write, "
                               "redirected I/O.",
    "copied (TiB)": "Bytes read and sent to the backup target.",
    "on AVHDX (VM-h)": "VM-hours running on a differencing disk (checkpoint) because of the backup.",
    "verified consistent": "Restores that verified as consistent (application- or crash-consistent); offline and "
                           "saved-state VMs verify as consistent too (see Restore verification).",
    "verified torn": "Restores that verified as torn: blocks from different instants.",
    "verified lost writes": "Restores missing a write that was on disk before the capture point.",
    "claim mismatches": "Backups whose verified state differs from the outcome claimed for them.",
    "leaks": "Snapshots, checkpoints, mounts, hot-added disks and redirected-access holds never released.",
    "audit": "The auditor's verdict on the run (one outcome per VM, everything released or counted, limits, time).",
}

# Columns where anything but zero is a problem (shown red whatever the other generations did).
BAD_WHEN_NONZERO = {"failed", "torn (undetected)", "leaks", "verified torn", "verified lost writes",
                    "claim mismatches"}

_ERROR_CAPTURE = """
(function () {
  var errors = [];
  function show() {
    var el = document.getElementById('console-errors');
    if (el) { el.textContent = errors.join('\\n'); el.setAttribute('data-count', String(errors.length)); }
  }
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) {
      errors.push('failed to load: ' + String(t.src || t.href).slice(0, 120));
    } else {
      errors.push('error: ' + e.message + (e.filename ? ' (' + e.filename + ':' + e.lineno + ')' : ''));
    }
    show();
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    errors.push('unhandled rejection: ' + e.reason); show();
  });
  var original = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); show();
    return original.apply(console, arguments);
  };
  window.addEventListener('load', function () {
    var imgs = document.images, broken = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (!imgs[i].complete || imgs[i].naturalWidth === 0) { broken++; }
    }
    if (broken) { errors.push(broken + ' image(s) did not render'); }
    var scale = 1;
    for (var j = 0; j < imgs.length; j++) {
      if (imgs[j].naturalWidth) { scale = Math.min(scale, imgs[j].clientWidth / imgs[j].naturalWidth); }
    }
    var st = document.getElementById('page-status');
    st.setAttribute('data-loaded', '1');
    st.setAttribute('data-images', String(imgs.length));
    st.setAttribute('data-broken-images', String(broken));
    st.setAttribute('data-min-image-scale', scale.toFixed(3));
    show();
  });
})();
"""

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0 auto; padding: 1rem 2rem;
       max-width: 1700px; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
nav a { margin-right: 1rem; }
.muted { color: #666; font-size: 0.92rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.55rem; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { background: #dff3df; font-weight: 700; color: #145214; }
td.bad { background: #fbe0e0; font-weight: 700; color: #8a1010; }
span.ok { color: #145214; font-weight: 700; } span.no { color: #8a1010; font-weight: 700; }
td.explain { color: #444; font-size: 0.85rem; min-width: 22rem; }
ul.key { padding-left: 1.2rem; } ul.key li { margin: 0.15rem 0; }
ul.key b { display: inline-block; min-width: 12rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.88rem; }
code { background: #f4f4f4; padding: 0 0.25rem; }
.note { background: #fff6dd; border-left: 4px solid #e0b000; padding: 0.4rem 0.8rem; }
#console-errors { color: #a00; white-space: pre-wrap; }
#console-errors:empty { display: none; }
#page-status { color: #999; font-size: 0.8rem; }
"""


@dataclass
class Generation:
    name: str
    folder: Path
    summary: dict[str, Any]
    timeline_png: Path | None = None
    perfetto_json: Path | None = None
    error: str = ""


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
# building
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


def draw_generation(gf: Path) -> tuple[Path | None, Path | None, str]:
    """timeline.png and trace.perfetto.json of one generation folder: (png, json, error)."""
    png = pj = None
    try:
        tl = load(gf)
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


def _draw_all(gens: list[Generation]) -> None:
    """Draw every generation, side by side in forked processes when there are cores for it (each
    picture is a separate matplotlib figure written to its own folder: the same files either way)."""
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


RUN_JSON = "run.json"  # written last by `cluster-sim run`: the run the folder holds


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


def build_report(folder: str | Path) -> Report:
    """Write timeline.png and trace.perfetto.json into every generation folder, then report.html
    (a plan folder, with a plan.json and no generation folders, gets the plan's page)."""
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
    _draw_all(gens)
    errors += [f"{g.name}: {g.error}" for g in gens if g.error]
    page = folder / "report.html"
    page.write_text(render_html(folder, gens), encoding="utf-8")
    return Report(folder, page, gens, errors, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


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


def _summaries(gens: list[Generation]):  # type: ignore[no-untyped-def]
    """Summary models for the comparison table (fields this version does not know are left out)."""
    from cluster_sim.results import Summary

    out = []
    for g in gens:
        known = {k: v for k, v in g.summary.items() if k in Summary.model_fields}
        out.append(Summary.model_validate(known))
    return out


def comparison_table(gens: list[Generation]) -> str:
    from cluster_sim.report.table import best_rows, cell, columns_for

    try:
        summaries = _summaries(gens)
    except Exception as exc:  # an older or newer summary.json: say so rather than fail the page
        return f'<p class="note">No comparison table: {_e(exc)}</p>'
    columns = columns_for(summaries)
    best = best_rows(summaries, columns)
    rows = ['<tr><th>metric</th>' + "".join(f'<th>{_e(s.generation)}</th>' for s in summaries)
            + '<th>what it tells you</th></tr>']
    for col in columns[1:]:
        cells = []
        for i, s in enumerate(summaries):
            text = cell(col, s)
            cls = "num best" if i in best.get(col.header, set()) else "num"
            value = col.get(s)
            if (col.header == "audit" and text != "ok") or (col.header in BAD_WHEN_NONZERO and value):
                cls = "num bad"
            cells.append(f'<td class="{cls}">{_e(text)}</td>')
        rows.append(f'<tr><th>{_e(col.header)}</th>{"".join(cells)}'
                    f'<td class="explain">{_e(EXPLAIN.get(col.header, ""))}</td></tr>')
    fails = []
    for s in summaries:
        if s.failures_by_reason:
            reasons = ", ".join(f"{k} {v}" for k, v in s.failures_by_reason.items())
            fails.append(f"<li><b>{_e(s.generation)}</b> failures: {_e(reasons)}</li>")
    legend = ('<p class="muted">Best value of each row in green: only among the generations with the fewest failed '
              'VMs, and only where they differ by 2 % or more; failures, torn or lost data, leaks and audit '
              'violations in red. Units are in the metric names.</p>')
    return (f'<div class="scroll"><table id="comparison-table">{"".join(rows)}</table></div>{legend}'
            + (f'<ul>{"".join(fails)}</ul>' if fails else ""))


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


def verification_section(gens: list[Generation]) -> str:
    have = [g for g in gens if "verification" in g.summary]
    if not have:
        return ""
    parts = ['<h2 id="verification">Restore verification</h2>',
             '<p class="muted">Each backed-up VM restored and compared block by block with the truth at its '
             'capture point (from <code>verification</code> in summary.json). Torn images, lost writes and '
             'claims that do not match what the restore shows are marked red.</p>']
    dicts = {g.name: g.summary["verification"] for g in have}
    why = consistent_count_notes(have)
    if why:
        parts.append('<p id="consistent-counts">Why <i>verified app-consistent</i> can be higher than the '
                     "comparison's <i>app-consistent</i>: a VM backed up offline (not running: its disk does not "
                     "change) or in saved state (memory and disk saved together) restores to an application-"
                     "consistent image, so verification counts it there; the comparison counts it under "
                     "<i>offline</i> or <i>saved-state</i>.</p>")
        parts.append('<ul class="key">' + "".join(f"<li>{_e(line)}</li>" for line in why) + "</ul>")
    if all(isinstance(v, dict) for v in dicts.values()):
        keys: list[str] = []
        for v in dicts.values():
            keys += [k for k in v if k not in keys]
        rows = ["<tr><th>result</th>" + "".join(f"<th>{_e(n)}</th>" for n in dicts) + "</tr>"]
        for k in keys:
            cells = []
            for v in dicts.values():
                x = v.get(k)
                bad = isinstance(x, int | float) and x and any(w in k for w in ("torn", "lost", "mismatch", "fail"))
                text = json.dumps(x) if isinstance(x, dict | list) else ("-" if x is None else str(x))
                cells.append(f'<td class="{"num bad" if bad else "num"}">{_e(text)}</td>')
            rows.append(f"<tr><th>{_e(k.replace('_', ' '))}</th>{''.join(cells)}</tr>")
        parts.append(f'<div class="scroll"><table id="verification-table">{"".join(rows)}</table></div>')
    else:
        for n, v in dicts.items():
            parts.append(f"<h3>{_e(n)}</h3><pre>{_e(json.dumps(v, indent=2))}</pre>")
    return "\n".join(parts)


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


def _png_size(png: Path) -> tuple[int, int]:
    """Width and height in pixels, from the PNG's IHDR chunk (the page shows it at most that wide)."""
    with open(png, "rb") as fh:
        head = fh.read(24)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def generation_section(g: Generation) -> str:
    s = g.summary
    title = f"{g.name}"
    if s.get("vm_count") is not None:
        title += f": {s.get('vm_count')} VMs on {s.get('node_count')} nodes, {s.get('csv_count')} CSVs"
    parts = [f'<section class="generation" id="gen-{_e(g.name)}" data-generation="{_e(g.name)}">',
             f"<h2>{_e(title)}</h2>"]
    if g.error:
        parts.append(f'<p class="note">Pictures not drawn: {_e(g.error)}</p>')
    lines = "".join(f"<li><b>{_e(a)}</b> {_e(b)} <span class=\"muted\">&mdash; {_e(c)}</span></li>"
                    for a, b, c in key_lines(s))
    parts.append(f'<ul class="key">{lines}</ul>')
    if g.timeline_png is not None and g.timeline_png.is_file():
        w, h = _png_size(g.timeline_png)
        parts.append(
            f'<figure><img src="{_data_uri(g.timeline_png)}" alt="timeline of the {_e(g.name)} backup" '
            f'width="{w}" height="{h}"><figcaption>Timeline: each node\'s VMs by backup phase over simulated time '
            f'(one lane per VM with few VMs, phase counts per node with many), then per-CSV redirected '
            f'access, storage snapshots and VM I/O latency. File: <code>{_e(g.name)}/timeline.png</code>.'
            f'</figcaption></figure>')
    if g.perfetto_json is not None:
        parts.append(f'<p class="muted">Every phase of every VM, zoomable: open <code>{_e(g.name)}/trace.perfetto.json'
                     '</code> in ui.perfetto.dev or chrome://tracing (one process per node, one track per VM).</p>')
    parts.append("</section>")
    return "\n".join(parts)


def render_html(folder: Path, gens: list[Generation]) -> str:
    first = gens[0].summary
    scenario = first.get("scenario", folder.name)
    heading = f"{scenario}: backup report"
    sub = (f"{first.get('vm_count', '?')} VMs on {first.get('node_count', '?')} nodes, "
           f"{first.get('csv_count', '?')} CSVs, seed {first.get('seed', '?')}; generations: "
           + ", ".join(g.name for g in gens) + ". All times are simulated.")
    nav = " ".join(f'<a href="#gen-{_e(g.name)}">{_e(g.name)}</a>' for g in gens)
    has_table = (folder / "comparison.csv").is_file()
    links = ['<a href="#comparison">comparison</a>'] if has_table else []
    links.append(nav)
    if any("verification" in g.summary for g in gens):
        links.append('<a href="#verification">verification</a>')
    body = [f"<h1>{_e(heading)}</h1>", f'<p class="muted">{_e(sub)}</p>', f'<nav>{" ".join(links)}</nav>']
    if has_table:
        body.append('<h2 id="comparison">Comparison</h2>')
        body.append(comparison_table(gens))
    body.append(verification_section(gens))
    body += [generation_section(g) for g in gens]
    return _page(heading, body)


def _page(heading: str, body: list[str]) -> str:
    """The self-contained page around `body`: error capture, style, the status footer."""
    body = [*body, '<footer><p id="page-status" data-loaded="0"></p>'
                   '<pre id="console-errors" data-count="0"></pre></footer>']
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(heading)}</title>\n<script>{_ERROR_CAPTURE}</script>\n<style>{_CSS}</style>\n</head>\n"
            "<body>\n" + "\n".join(b for b in body if b) + "\n</body>\n</html>\n")


# ----------------------------------------------------------------------------------------------
# a plan folder (`cluster-sim plan`): the answer, the baseline beside the best trial, the trials
# ----------------------------------------------------------------------------------------------
PLAN_JSON = "plan.json"  # what cluster_sim/plan.py writes for this page (and the terminal summary)


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


def _plan_num(v: Any) -> str:
    from cluster_sim.plan import fmt_value  # (the terminal summary's format)

    return fmt_value(v)


def _met(ok: Any) -> str:
    if ok is None:
        return ""
    return ' <span class="ok">met</span>' if ok else ' <span class="no">not met</span>'


def plan_comparison_table(summary: dict[str, Any]) -> str:
    best = summary.get("best")
    head = (f"<tr><th></th><th>baseline (scenario as written)</th><th>best feasible"
            f"{' (trial ' + _e(best['trial']) + ')' if best else ''}</th><th>change</th><th>limit / searched over</th></tr>")
    rows = []
    for r in summary.get("comparison", []):
        if r["kind"] == "setting":
            rows.append(f'<tr class="setting"><td><code>{_e(r["name"])}</code></td><td class="num">'
                        f'{_e(_plan_num(r["baseline"]))}</td><td class="num">{_e(_plan_num(r["best"]))}</td><td></td>'
                        f'<td class="muted">{_e(r["domain"])}</td></tr>')
            continue
        limits = r.get("constraints") or []
        base_ok = None if not limits else all(c["baseline_met"] for c in limits)
        best_ok = None if not limits or not best else all(c["best_met"] for c in limits)
        change = "" if r.get("change") is None else (
            f"{r['change_pct']:+.1f} %" if r.get("change_pct") is not None else f"{r['change']:+g}")
        what = "; ".join(([r["role"]] if r.get("role") else []) + [c["text"] for c in limits])
        rows.append(f'<tr><td><code>{_e(r["name"])}</code></td><td class="num">{_e(_plan_num(r["baseline"]))}'
                    f'{_met(base_ok)}</td><td class="num">{_e(_plan_num(r["best"]))}{_met(best_ok)}</td>'
                    f'<td class="num">{_e(change)}</td><td>{_e(what)}</td></tr>')
    return f'<div class="scroll"><table id="plan-comparison">{head}{"".join(rows)}</table></div>'


def plan_trials_table(summary: dict[str, Any]) -> str:
    trials = summary.get("top_trials") or []
    if not trials:
        return ""
    params = list(summary.get("search", {}))
    objectives = [o["metric"] for o in summary.get("objectives", [])]
    head = ("<tr><th>trial</th>" + "".join(f"<th><code>{_e(p)}</code></th>" for p in params)
            + "".join(f"<th>{_e(o)} (mean)</th>" for o in objectives) + "<th>feasible</th>"
            + "".join(f"<th>{_e(c)}<br><span class=\"muted\">worst seed</span></th>"
                      for c in summary.get("constraints", [])) + "</tr>")
    rows = []
    for t in trials:
        cells = [f'<td class="num">{_e(t["trial"])}</td>']
        cells += [f'<td class="num">{_e(_plan_num(t["params"].get(p)))}</td>' for p in params]
        cells += [f'<td class="num">{_e(_plan_num(v))}</td>' for v in t.get("objectives", [])]
        cells.append(f"<td>{'yes' if t['feasible'] else ('error' if t.get('error') else 'no')}</td>")
        for c in t.get("constraints", []):
            cls = "num" if c["met"] else "num bad"
            cells.append(f'<td class="{cls}">{_e(_plan_num(c["worst"]))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table id="plan-trials">{head}{"".join(rows)}</table></div>'
            f'<p class="muted">The {len(trials)} best trials (feasible first); every trial, with every metric\'s '
            f'mean, minimum and maximum over seeds, is in <code>trials.parquet</code>, every run in '
            f'<code>runs.parquet</code>.</p>')


def plan_section(folder: Path, summary: dict[str, Any]) -> str:
    """The plan's answer: in words, baseline beside best, the plot, best.yaml, the best trials."""
    parts = ['<section class="plan" id="plan">', "<h2>The answer</h2>"]
    answer = summary.get("answer") or []
    cls = "" if summary.get("best") else ' class="note"'
    parts.append(f"<ul{cls}>" + "".join(f"<li>{_e(line)}</li>" for line in answer) + "</ul>")
    parts.append('<h2 id="plan-table">Baseline and best trial</h2>')
    parts.append(plan_comparison_table(summary))
    inf = summary.get("infeasible")
    if inf and inf.get("met_counts"):
        items = "".join(f"<li><code>{_e(c)}</code>: met by {n} of {inf['trials_run']} trials</li>"
                        for c, n in inf["met_counts"].items())
        parts.append(f"<p>Constraints met, trial by trial:</p><ul>{items}</ul>")
    png = folder / (summary.get("outputs", {}).get("plot") or "pareto.png")
    if png.is_file():
        what = ("every trial in objective space, the Pareto front of the feasible ones and the baseline"
                if len(summary.get("objectives", [])) == 2 else
                "the objective of each trial in the order they ran, the best feasible so far and the baseline")
        parts.append(f'<figure><img src="{_data_uri(png)}" alt="trials of the plan" width="765">'
                     f"<figcaption>{_e(what)}; grey crosses are infeasible trials. File: "
                     f"<code>{_e(png.name)}</code>.</figcaption></figure>")
    best_file = folder / "best.yaml"
    if summary.get("best") and best_file.is_file():
        parts.append('<h2 id="plan-best">best.yaml</h2><p>Apply it with <code>cluster-sim run SCENARIO '
                     '--overrides best.yaml</code>:</p>')
        parts.append(f"<pre>{_e(best_file.read_text(encoding='utf-8'))}</pre>")
    parts.append('<h2 id="plan-trials">Trials</h2>')
    parts.append(plan_trials_table(summary))
    parts.append("</section>")
    return "\n".join(parts)


def render_plan_html(folder: Path, summary: dict[str, Any]) -> str:
    heading = f"{summary.get('plan', folder.name)}: backup settings plan"
    budget = summary.get("budget") or {}
    sub = (f"{summary.get('scenario_name')} ({summary.get('scenario')}), {summary.get('generation')}; "
           f"{summary.get('trials')} trials of up to {budget.get('trials')}, {summary.get('feasible')} feasible, "
           f"{summary.get('failed')} failed; seeds {', '.join(map(str, summary.get('seeds', [])))} per trial; "
           f"{summary.get('sampler')} on Ray Tune. Objective: "
           + " and ".join(f"{o['direction']} {o['metric']}" for o in summary.get("objectives", []))
           + ". Constraints: " + (", ".join(summary.get("constraints") or []) or "none")
           + ". All times are simulated.")
    nav = ('<nav><a href="#plan">answer</a> <a href="#plan-table">baseline and best</a> '
           '<a href="#plan-trials">trials</a></nav>')
    body = [f"<h1>{_e(heading)}</h1>", f'<p class="muted">{_e(sub)}</p>', nav, plan_section(folder, summary)]
    return _page(heading, body)
