"""Backup phase spans, as the backup emitted them (`spans.jsonl`), and the rest of a generation's
timeline from its `trace.jsonl` (and its other result files).

Each VM walks through its backup one phase at a time:

    wait -> freeze -> [checkpoint] -> snapshot -> [auto-recovery] -> wait -> copy -> [merge]

with `paused` for VMs put in saved state, and `retry wait` between a failed attempt and the
next. The backup opens and closes each span itself (backup/steps.py, snapshots.py, phases.py,
ws2016.py: `job.span(...)`), and each attempt (`attempt`, with how it ended). Inside an attempt,
time no phase covers is waiting (for the node's VSS lock, the CSV pin, the rest of the batch or
set, a copy slot); where two phases overlap the one drawn is the first in PRIORITY (a ws2016
copy runs alongside its AVHDX merge; a saved VM's snapshot happens while it is paused).

Besides the phases: the attempts themselves, failures, live migrations, node crashes, per-CSV
redirected-access holds, pending and existing storage snapshots, and the latency series.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

# phase key -> (legend label, colour). The order is the drawing (stacking) order.
PHASES: dict[str, tuple[str, str]] = {
    "copy": ("copy", "#2ca02c"),
    "merge": ("AVHDX merge", "#17becf"),
    "auto_recovery": ("auto-recovery (host mounts / SCSI fix-up)", "#8c564b"),
    "snapshot": ("storage snapshot set (writes held)", "#ff7f0e"),
    "checkpoint": ("checkpoint (AVHDX)", "#9467bd"),
    "freeze": ("guest freeze (VSS / fsfreeze)", "#1f77b4"),
    "paused": ("paused (saved state)", "#d62728"),
    "wait": ("waiting (VSS lock, CSV pin, set, copy slot)", "#c7c7c7"),
    "retry_wait": ("retry wait", "#f7b6d2"),
}
ACTIVE = [p for p in PHASES if p not in ("wait", "retry_wait")]

OUTCOME_COLOURS = {
    "app_consistent": "#2ca02c",
    "crash_consistent": "#bcbd22",
    "saved_state": "#d62728",
    "offline": "#7f7f7f",
    "failed": "#000000",
}


NATURAL_KEYS_KEPT = 65_536  # [P] names whose sort key is kept (VMs, nodes, CSVs of the largest runs)


@lru_cache(maxsize=NATURAL_KEYS_KEPT)
def natural_key(name: str) -> tuple[Any, ...]:
    """node-2 before node-10 (kept per name: sorting 8,000 VMs' spans asked 86,752 times)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


@dataclass(frozen=True)
class Span:
    vm: str
    node: str  # where the attempt ran
    phase: str  # a PHASES key, or "attempt"
    start: float
    end: float
    attempt: int
    note: str = ""


@dataclass
class Migration:
    vm: str
    src: str
    dst: str
    start: float
    end: float | None
    status: str  # done | failed | running
    downtime_ms: float | None = None


@dataclass
class NodeDown:
    node: str
    crashed: float
    detected: float | None
    recovered: float | None


@dataclass
class Hold:
    csv: str
    node: str
    kind: str
    start: float
    end: float | None  # None: never released (a leak)


@dataclass
class Timeline:
    folder: Path
    generation: str
    summary: dict[str, Any]
    nodes: list[str]
    csvs: list[str]
    vms: list[str]
    vm_home: dict[str, str]  # VM -> node of its first attempt (its lane)
    host_changes: dict[str, list[tuple[float, str]]]  # VM -> (t, node it runs on from t): attempts, moves, restarts
    outcomes: dict[str, tuple[str, str, float]]  # VM -> (outcome, reason, at)
    spans: list[Span]
    attempts: list[Span]
    failures: list[tuple[float, str, str, str]]  # (t, vm, node, reason)
    migrations: list[Migration]
    refusals: list[tuple[float, str, str]]  # (t, vm, node)
    downs: list[NodeDown]
    restarts: list[tuple[float, str, str]]  # (t, vm, node)
    holds: list[Hold]
    pending: tuple[np.ndarray, np.ndarray]  # step series (t, value): snapshots queued at the array
    existing: tuple[np.ndarray, np.ndarray]  # step series: storage snapshots that exist
    jobs: list[tuple[float, float | None, str]]  # (start, end, mode)
    instants: list[tuple[float, str, dict[str, Any]]]  # other faults worth a mark
    latency: tuple[np.ndarray, np.ndarray, np.ndarray]  # t_s, p50_ms, p99_ms
    t_end: float
    has_trace: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def t_start(self) -> float:
        return min((j[0] for j in self.jobs), default=0.0)

    def to_do(self) -> list[tuple[str, str, float, float]]:
        """(vm, node, start, end): where each VM was while the job still owed it an outcome."""
        out = []
        t0 = self.t_start
        for vm in self.vms:
            end = self.outcomes[vm][2] if vm in self.outcomes else self.t_end
            changes = self.host_changes.get(vm) or [(t0, self.vm_home.get(vm, ""))]
            for i, (t, node) in enumerate(changes):
                a = t0 if i == 0 else max(t, t0)
                z = min(changes[i + 1][0], end) if i + 1 < len(changes) else end
                if z > a:
                    out.append((vm, node, a, z))
        return out


# ----------------------------------------------------------------------------------------------
# the emitted spans, laid out one phase at a time
# ----------------------------------------------------------------------------------------------
# where a VM's spans overlap, the first of these is drawn
PRIORITY = ("copy", "snapshot", "auto_recovery", "checkpoint", "freeze", "merge", "paused")
_RANK = {p: i for i, p in enumerate(PRIORITY)}


def read_spans(folder: Path) -> list[dict[str, Any]]:
    path = folder / "spans.jsonl"
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def lay_out(start: float, end: float, spans: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The window [start, end] as a sequence of phases: at each instant the highest-priority span
    covering it, else `wait`; adjacent pieces of one phase are joined."""
    cuts = sorted({start, end} | {t for _p, a, z in spans for t in (a, z) if start < t < end})
    out: list[tuple[str, float, float]] = []
    for a, z in zip(cuts, cuts[1:], strict=False):
        covering = [p for p, s, e in spans if s <= a and e >= z]
        phase = min(covering, key=_RANK.__getitem__) if covering else "wait"
        if out and out[-1][0] == phase and out[-1][2] == a:
            out[-1] = (phase, out[-1][1], z)
        else:
            out.append((phase, a, z))
    return out


def phase_spans(rows: list[dict[str, Any]]) -> tuple[list[Span], list[Span], list[tuple[float, str, str, str]]]:
    """(phase spans, attempt spans, failures (t, vm, node, reason)) from spans.jsonl rows."""
    attempts: list[Span] = []
    phases: dict[tuple[str, int], list[tuple[str, float, float]]] = {}
    retry_waits: list[Span] = []
    for r in rows:
        vm, node, phase = str(r["vm"]), str(r.get("node", "")), str(r["phase"])
        a, z, n = float(r["start_s"]), float(r["end_s"]), int(r.get("attempt", 0))
        if phase == "attempt":
            attempts.append(Span(vm, node, "attempt", a, z, n, str(r.get("note", ""))))
        elif phase == "retry_wait":
            if z > a:
                retry_waits.append(Span(vm, node, phase, a, z, n))
        elif phase in _RANK:
            phases.setdefault((vm, n), []).append((phase, a, z))
    attempts.sort(key=lambda s: (s.start, natural_key(s.vm)))
    spans = list(retry_waits)
    failures = []
    for att in attempts:
        for phase, a, z in lay_out(att.start, att.end, phases.get((att.vm, att.attempt), [])):
            if z > a:
                spans.append(Span(att.vm, att.node, phase, a, z, att.attempt))
        if att.note.startswith("failed: "):
            failures.append((att.end, att.vm, att.node, att.note[len("failed: "):]))
    spans.sort(key=lambda s: (s.start, natural_key(s.vm)))
    return spans, attempts, failures


# ----------------------------------------------------------------------------------------------
# reading a generation folder
# ----------------------------------------------------------------------------------------------
def read_summary(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


def read_latency(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = folder / "latency.csv"
    empty = (np.zeros(0), np.zeros(0), np.zeros(0))
    if not path.exists():
        return empty
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            try:
                rows.append((float(r["t_s"]), float(r["p50_ms"]), float(r["p99_ms"])))
            except (KeyError, TypeError, ValueError):
                continue
    if not rows:
        return empty
    a = np.array(rows, dtype=float)
    return a[:, 0], a[:, 1], a[:, 2]


def read_trace(folder: Path) -> list[dict[str, Any]]:
    path = folder / "trace.jsonl"
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _step(changes: list[tuple[float, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(t, +-1) changes -> a step series: value from t[i] until t[i+1] (one point per instant)."""
    if not changes:
        return np.zeros(0), np.zeros(0)
    t = np.array([c[0] for c in changes])
    d = np.array([c[1] for c in changes], dtype=float)
    v = np.cumsum(d)
    last = np.r_[t[1:] != t[:-1], True]  # keep the value after the last change of each instant
    return t[last], v[last]


def load(folder: str | Path, trace: Any = None) -> Timeline:
    """The timeline of a generation folder; `trace` (kernel.trace.Trace): the run's own trace, whose
    rows are what its trace.jsonl and spans.jsonl read back as (drawn where the generation ran,
    without parsing the lines it has just written)."""
    folder = Path(folder)
    summary = read_summary(folder)
    if trace is None:
        events, span_rows = read_trace(folder), read_spans(folder)
    else:
        events, span_rows = list(trace.rows()), list(trace.span_rows())
    spans, attempts, failures = phase_spans(span_rows)
    outcomes: dict[str, tuple[str, str, float]] = {}
    home: dict[str, str] = {}
    for att in attempts:
        home.setdefault(att.vm, att.node)
    mig: dict[str, Migration] = {}
    migrations: list[Migration] = []
    refusals: list[tuple[float, str, str]] = []
    downs: dict[str, NodeDown] = {}
    down_list: list[NodeDown] = []
    restarts: list[tuple[float, str, str]] = []
    open_holds: dict[Any, Hold] = {}
    holds: list[Hold] = []
    pending: list[tuple[float, int]] = []
    existing: list[tuple[float, int]] = []
    jobs: list[list[Any]] = []
    instants: list[tuple[float, str, dict[str, Any]]] = []
    nodes: set[str] = set()
    csvs: set[str] = set()
    generation = str(summary.get("generation", folder.name))
    seen_vms: set[str] = set(home)
    t_last = 0.0
    hosts: dict[str, list[tuple[float, str]]] = {}

    def host(vm_name: Any, t: float, node: Any) -> None:
        if isinstance(vm_name, str) and isinstance(node, str) and node:
            h = hosts.setdefault(vm_name, [])
            if not h or h[-1][1] != node:
                h.append((t, node))

    for e in events:
        t = float(e.get("sim_time_s") or 0.0)
        t_last = max(t_last, t)
        ev = e.get("event", "")
        if "node" in e and isinstance(e["node"], str):
            nodes.add(e["node"])
        if "csv" in e and isinstance(e["csv"], str):
            csvs.add(e["csv"])
        vm = e.get("vm")
        if ev == "vm_attempt":
            host(vm, t, e.get("node"))
            seen_vms.add(vm)
        elif ev == "vm_outcome" and isinstance(vm, str):
            outcomes[vm] = (str(e.get("outcome", "")), str(e.get("reason", "") or ""), t)
            seen_vms.add(vm)
        elif ev == "snapshot_set_failed":
            instants.append((t, ev, e))
        elif ev == "snapshot_requested":  # one per LUN of a set (committed together)
            pending.append((t, 1))
        elif ev == "snapshot_created":
            if not e.get("software"):
                pending.append((t, -1))
            existing.append((t, 1))
        elif ev == "snapshot_failed":
            if not e.get("software"):
                pending.append((t, -int(e.get("luns") or 1)))
            instants.append((t, ev, e))
        elif ev == "snapshot_released":
            existing.append((t, -1))
        elif ev == "csv_redirect_hold":
            h = Hold(e["csv"], str(e.get("node", "")), str(e.get("kind", "")), t, None)
            open_holds[e.get("hold", (e["csv"], t))] = h
            holds.append(h)
        elif ev == "csv_redirect_release":
            h = open_holds.pop(e.get("hold"), None)
            if h is not None:
                h.end = t
        elif ev == "migration_start":
            host(vm, t, e.get("node"))
            m = Migration(vm, str(e.get("node", "")), str(e.get("to", "")), t, None, "running")
            mig[vm] = m
            migrations.append(m)
        elif ev in ("migration_done", "migration_failed"):
            m = mig.pop(vm, None)
            if m is not None:
                m.end, m.status = t, "done" if ev == "migration_done" else "failed"
                m.downtime_ms = e.get("downtime_ms")
            if ev == "migration_done":
                host(vm, t, e.get("to"))
            if ev == "migration_failed":
                instants.append((t, ev, e))
        elif ev == "migration_refused":
            refusals.append((t, vm, str(e.get("node", ""))))
        elif ev == "node_crashed":
            d = NodeDown(e["node"], t, None, None)
            downs[e["node"]] = d
            down_list.append(d)
        elif ev == "node_failed":
            d = downs.get(e["node"])
            if d is None or d.detected is not None:  # found down without a crash event first
                d = NodeDown(e["node"], t, t, None)
                downs[e["node"]] = d
                down_list.append(d)
            else:
                d.detected = t
        elif ev == "node_recovered":
            d = downs.pop(e["node"], None)
            if d is not None:
                d.recovered = t
        elif ev == "vm_restarted":
            host(vm, t, e.get("node"))
            restarts.append((t, vm, str(e.get("node", ""))))
        elif ev == "job_start":
            jobs.append([t, None, str(e.get("mode", ""))])
        elif ev == "job_end":
            if jobs and jobs[-1][1] is None:
                jobs[-1][1] = t
        elif ev in ("snapshot_leaked", "backup_aborted_by_migration", "drain_done", "drain_skipped"):
            instants.append((t, ev, e))
        elif ev == "event":
            instants.append((t, f"scenario: {e.get('kind', '')}", e))

    t_end = max(t_last, float(summary.get("sim_end_s") or 0.0))

    # lanes: nodes and CSVs as the cluster has them, VMs as vms.csv lists them
    node_count = int(summary.get("node_count") or 0)
    nodes |= {f"node-{i}" for i in range(1, node_count + 1)}
    csv_rows = _read_rows(folder / "csvs.csv")
    csvs |= {r["csv"] for r in csv_rows if r.get("csv")}
    csv_count = int(summary.get("csv_count") or 0)
    csvs |= {f"csv-{i}" for i in range(1, csv_count + 1)}
    vm_rows = _read_rows(folder / "vms.csv")
    vms = [r["vm"] for r in vm_rows if r.get("vm")] or sorted(seen_vms)
    for r in vm_rows:
        home.setdefault(r["vm"], r.get("node", ""))
        if r["vm"] not in outcomes and r.get("outcome"):
            outcomes[r["vm"]] = (r["outcome"], r.get("reason", ""), float(r.get("end_s") or 0.0))
    vms = sorted(set(vms) | seen_vms, key=natural_key)

    notes = []
    if not events:
        notes.append("no trace.jsonl in this folder: phases, snapshots and redirected access are not shown")
    elif not (folder / "spans.jsonl").exists():
        notes.append("no spans.jsonl in this folder (written by an older cluster_sim): phases are not shown")
    return Timeline(
        folder=folder, generation=generation, summary=summary,
        nodes=sorted(nodes, key=natural_key), csvs=sorted(csvs, key=natural_key), vms=vms, vm_home=home,
        host_changes=hosts,
        outcomes=outcomes, spans=spans, attempts=attempts, failures=failures,
        migrations=migrations, refusals=refusals, downs=down_list, restarts=restarts, holds=holds,
        pending=_step(pending), existing=_step(existing),
        jobs=[(j[0], j[1], j[2]) for j in jobs], instants=instants, latency=read_latency(folder),
        t_end=t_end, has_trace=bool(events), notes=notes,
    )


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------------------------
# summaries of the spans
# ----------------------------------------------------------------------------------------------
def occupancy(spans: list[Span], edges: np.ndarray) -> np.ndarray:
    """Mean number of spans in progress in each bin [edges[i], edges[i+1]) (VM-seconds / seconds)."""
    if not spans:
        return np.zeros(len(edges) - 1)
    s = np.sort(np.array([sp.start for sp in spans]))
    e = np.sort(np.array([sp.end for sp in spans]))
    cs, ce = np.r_[0.0, np.cumsum(s)], np.r_[0.0, np.cumsum(e)]
    ns, ne = np.searchsorted(s, edges, "right"), np.searchsorted(e, edges, "right")
    area = (ns * edges - cs[ns]) - (ne * edges - ce[ne])  # VM-seconds of span time before each edge
    width = np.diff(edges)
    return np.diff(area) / np.where(width > 0, width, 1.0)


def redirected_intervals(holds: list[Hold], t_end: float) -> dict[str, list[tuple[float, float, str]]]:
    """Per CSV: the stretches in redirected access (union of its holds), with the kinds of hold."""
    by_csv: dict[str, list[Hold]] = {}
    for h in holds:
        by_csv.setdefault(h.csv, []).append(h)
    out: dict[str, list[tuple[float, float, str]]] = {}
    for c, hs in by_csv.items():
        hs = sorted(hs, key=lambda h: h.start)
        merged: list[list[Any]] = []
        for h in hs:
            end = t_end if h.end is None else h.end
            if merged and h.start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
                merged[-1][2].add(h.kind)
            else:
                merged.append([h.start, end, {h.kind}])
        out[c] = [(a, z, "+".join(sorted(k))) for a, z, k in merged]
    return out
