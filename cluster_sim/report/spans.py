"""Backup phase spans, derived from a generation's `trace.jsonl` (and its other result files).

Each VM walks through its backup one phase at a time, so its phases never overlap:

    wait -> freeze -> [checkpoint] -> snapshot -> [auto-recovery] -> wait -> copy -> [merge]

with `paused` for VMs put in saved state, and `retry wait` between a failed attempt and the
next. Boundaries come from the VM's own events (`vm_attempt`, `vm_prepare`, `guest_frozen`,
`checkpoint_created`, `vm_saved`/`vm_resumed`, `scsi_fixup_start`/`_done`, `copy_start`/`_end`,
`checkpoint_merged`, `vm_attempt_failed`, `vm_outcome`) and from the events of the shadow-copy
set (`snapshot_set_start` lists its members) and of host auto-recovery (`auto_recovery_start`
lists its VMs) they take part in. A stretch between two events whose own name does not say what
happened is named by the event that ends it: the stretch ending at `guest_frozen` was the freeze,
the one ending at `checkpoint_merged` the merge, any other one waiting (for the node's VSS lock,
the CSV pin, the rest of the batch or set, a copy slot).

Besides the phases: the attempts themselves, failures, live migrations, node crashes, per-CSV
redirected-access holds, pending and existing storage snapshots, and the latency series.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
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


def natural_key(name: str) -> tuple[Any, ...]:
    """node-2 before node-10."""
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
# the per-VM state machine
# ----------------------------------------------------------------------------------------------
class _Vm:
    __slots__ = ("name", "label", "gap", "since", "node", "attempt", "attempt_start", "saved", "active")

    def __init__(self, name: str):
        self.name = name
        self.label: str | None = None  # explicit phase, "?" for a stretch named by its end, None idle
        self.gap = "plain"  # "prepare": the stretch after vm_prepare
        self.since = 0.0
        self.node = ""
        self.attempt = 0
        self.attempt_start = 0.0
        self.saved = False
        self.active = False  # inside an attempt


_ENDS_AS = {
    "guest_frozen": "freeze",
    "checkpoint_created": "checkpoint",
    "checkpoint_merged": "merge",
    "auto_recovery_done": "auto_recovery",
    "scsi_fixup_done": "auto_recovery",
    "vm_resumed": "paused",
}


class _Builder:
    def __init__(self) -> None:
        self.vms: dict[str, _Vm] = {}
        self.spans: list[Span] = []
        self.attempts: list[Span] = []
        self.failures: list[tuple[float, str, str, str]] = []
        self.outcomes: dict[str, tuple[str, str, float]] = {}
        self.home: dict[str, str] = {}

    def vm(self, name: str) -> _Vm:
        v = self.vms.get(name)
        if v is None:
            v = self.vms[name] = _Vm(name)
        return v

    def _emit(self, v: _Vm, phase: str, start: float, end: float) -> None:
        if end > start:
            self.spans.append(Span(v.name, v.node, phase, start, end, v.attempt))

    def close(self, v: _Vm, t: float, by: str) -> None:
        """End the current stretch at t; `by` is the event that ends it."""
        if v.label is None:
            return
        if v.label == "?":
            phase = _ENDS_AS.get(by)
            if phase is None:
                phase = "freeze" if (v.gap == "prepare" and by == "vm_attempt_failed") else "wait"
            if v.saved and phase == "wait":
                phase = "paused"
        else:
            phase = v.label
        self._emit(v, phase, v.since, t)
        v.label, v.since, v.gap = None, t, "plain"

    def enter(self, v: _Vm, t: float, label: str, gap: str = "plain") -> None:
        v.label, v.since, v.gap = label, t, gap

    # -- events ------------------------------------------------------------------------------------
    def attempt(self, t: float, name: str, node: str, n: int) -> None:
        v = self.vm(name)
        if v.label is not None:
            self.close(v, t, "vm_attempt")
        if v.active:  # an attempt that never reported its end
            self.attempts.append(Span(name, v.node, "attempt", v.attempt_start, t, v.attempt, "unfinished"))
        v.node, v.attempt, v.attempt_start, v.active, v.saved = node, n, t, True, False
        self.home.setdefault(name, node)
        self.enter(v, t, "?")

    def end_attempt(self, v: _Vm, t: float, note: str) -> None:
        if v.active:
            self.attempts.append(Span(v.name, v.node, "attempt", v.attempt_start, t, v.attempt, note))
            v.active = False

    def step(self, t: float, name: str, ev: str, ids: dict[str, Any]) -> None:
        v = self.vm(name)
        if not v.active:
            if ev == "vm_outcome":
                self.outcome(v, t, ids)
            return  # e.g. a failed attempt's checkpoint merged away during its retry wait
        if ev == "vm_prepare":
            self.close(v, t, ev)
            self.enter(v, t, "?", gap="prepare")
        elif ev == "guest_frozen":
            if v.label == "?" and v.gap != "prepare":  # a trace without vm_prepare
                start = max(v.since, t - float(ids.get("freeze_s") or 0.0))
                self.close(v, start, "vm_prepare")
                self.enter(v, start, "freeze")
            self.close(v, t, ev)
            self.enter(v, t, "?")
        elif ev == "checkpoint_created":
            if v.label in ("?", "freeze"):
                self.close(v, t, ev)
                self.enter(v, t, "?")
        elif ev == "vm_saved":
            self.close(v, t, ev)
            v.saved = True
            self.enter(v, t, "paused")
        elif ev == "vm_resumed":
            self.close(v, t, ev)
            v.saved = False
            self.enter(v, t, "?")
        elif ev in ("set_start", "auto_recovery_start", "scsi_fixup_start", "copy_start"):
            self.close(v, t, ev)
            phase = {"set_start": "snapshot", "copy_start": "copy"}.get(ev, "auto_recovery")
            self.enter(v, t, phase)
        elif ev in ("set_done", "set_failed"):
            if v.label == "snapshot":
                self.close(v, t, ev)
                self.enter(v, t, "paused" if v.saved else "?", gap="after_set")
        elif ev in ("auto_recovery_done", "scsi_fixup_done"):
            if v.label in ("auto_recovery", "?"):
                self.close(v, t, ev)
                self.enter(v, t, "?")
        elif ev == "copy_end":
            if v.label == "copy":
                self.close(v, t, ev)
                self.enter(v, t, "?")
        elif ev == "checkpoint_merged":
            if v.label == "?":  # a merge running alongside a copy is not a phase of its own
                self.close(v, t, ev)
                self.enter(v, t, "?")
        elif ev == "vm_attempt_failed":
            reason = str(ids.get("reason", ""))
            self.close(v, t, ev)
            self.failures.append((t, name, v.node, reason))
            self.end_attempt(v, t, f"failed: {reason}")
            v.saved = False
            self.enter(v, t, "retry_wait")
        elif ev == "vm_outcome":
            self.outcome(v, t, ids)

    def outcome(self, v: _Vm, t: float, ids: dict[str, Any]) -> None:
        outcome, reason = str(ids.get("outcome", "")), str(ids.get("reason", "") or "")
        if v.label == "retry_wait":
            v.label = None  # the last attempt failed: no retry follows
        else:
            self.close(v, t, "vm_outcome")
        self.end_attempt(v, t, outcome + (f": {reason}" if reason else ""))
        self.outcomes[v.name] = (outcome, reason, t)
        v.saved = False

    def finish(self, t: float) -> None:
        for v in self.vms.values():
            if v.label is not None:
                self.close(v, t, "end")
            self.end_attempt(v, t, "unfinished")


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


def load(folder: str | Path) -> Timeline:
    folder = Path(folder)
    summary = read_summary(folder)
    events = read_trace(folder)
    b = _Builder()
    set_members: dict[str, list[str]] = {}
    ar_members: dict[str, list[str]] = {}  # node -> VMs of its running host auto-recovery
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
            b.attempt(t, vm, str(e.get("node", "")), int(e.get("attempt", 1)))
        elif ev in ("vm_prepare", "guest_frozen", "checkpoint_created", "checkpoint_merged", "vm_saved",
                    "vm_resumed", "scsi_fixup_start", "scsi_fixup_done", "copy_start", "copy_end",
                    "vm_attempt_failed", "vm_outcome"):
            if vm is not None:
                b.step(t, vm, ev, e)
        elif ev == "snapshot_set_start":
            members = e.get("members")
            if members is None:  # an older trace: the VMs waiting for a set (on that node before ws2016)
                members = [v.name for v in b.vms.values()
                           if v.active and v.label in ("?", "paused", "freeze") and v.gap == "plain"
                           and v.attempt_start <= t and (generation == "ws2016" or v.node == e.get("node"))
                           and v.name not in _members_in_sets(set_members, b)]
            set_members[e["set"]] = list(members)
            for m in members:
                b.step(t, m, "set_start", e)
        elif ev in ("snapshot_set_done", "snapshot_set_failed"):
            for m in set_members.pop(e.get("set"), []):
                b.step(t, m, "set_done" if ev == "snapshot_set_done" else "set_failed", e)
            if ev == "snapshot_set_failed":
                instants.append((t, ev, e))
        elif ev == "auto_recovery_start":
            members = list(e.get("members") or [])
            ar_members[e["node"]] = members
            for m in members:
                b.step(t, m, "auto_recovery_start", e)
        elif ev == "auto_recovery_done":
            members = ar_members.pop(e.get("node"), None)
            if members is None:  # an older trace: the node's VMs past their snapshot set
                members = [v.name for v in b.vms.values()
                           if v.active and v.node == e.get("node") and v.label == "?" and v.gap == "after_set"]
            for m in members:
                b.step(t, m, "auto_recovery_done", e)
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
    b.finish(t_end)

    # lanes: nodes and CSVs as the cluster has them, VMs as vms.csv lists them
    node_count = int(summary.get("node_count") or 0)
    nodes |= {f"node-{i}" for i in range(1, node_count + 1)}
    csv_rows = _read_rows(folder / "csvs.csv")
    csvs |= {r["csv"] for r in csv_rows if r.get("csv")}
    csv_count = int(summary.get("csv_count") or 0)
    csvs |= {f"csv-{i}" for i in range(1, csv_count + 1)}
    vm_rows = _read_rows(folder / "vms.csv")
    vms = [r["vm"] for r in vm_rows if r.get("vm")] or sorted(b.vms)
    home = dict(b.home)
    for r in vm_rows:
        home.setdefault(r["vm"], r.get("node", ""))
        if r["vm"] not in b.outcomes and r.get("outcome"):
            b.outcomes[r["vm"]] = (r["outcome"], r.get("reason", ""), float(r.get("end_s") or 0.0))
    vms = sorted(set(vms) | set(b.vms), key=natural_key)

    notes = []
    if not events:
        notes.append("no trace.jsonl in this folder: phases, snapshots and redirected access are not shown")
    return Timeline(
        folder=folder, generation=generation, summary=summary,
        nodes=sorted(nodes, key=natural_key), csvs=sorted(csvs, key=natural_key), vms=vms, vm_home=home,
        host_changes=hosts,
        outcomes=b.outcomes, spans=b.spans, attempts=b.attempts, failures=b.failures,
        migrations=migrations, refusals=refusals, downs=down_list, restarts=restarts, holds=holds,
        pending=_step(pending), existing=_step(existing),
        jobs=[(j[0], j[1], j[2]) for j in jobs], instants=instants, latency=read_latency(folder),
        t_end=t_end, has_trace=bool(events), notes=notes,
    )


def _members_in_sets(set_members: dict[str, list[str]], _b: _Builder) -> set[str]:
    return {m for ms in set_members.values() for m in ms}


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
