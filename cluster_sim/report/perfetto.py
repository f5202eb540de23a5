"""`trace.perfetto.json`: one generation in the Chrome trace-event format (JSON object form).

Opens in ui.perfetto.dev and chrome://tracing. Layout:
- process "cluster": the backup job as a span, scenario events as global instants;
- process "storage": counters for pending and existing storage snapshots, one track per CSV
  with its redirected-access spans and a counter of its redirected-access holds, snapshot faults;
- one process per node: a "node" track (down from crash to recovery, crash / failure / recovery /
  failover-restart instants) and one track per VM whose attempts ran there: an `attempt N`
  span holding that attempt's phases, `retry wait` spans between attempts, failed-attempt
  instants; live migrations leaving the node as async spans.

Times are simulated microseconds. Spans are complete ("X") events; on each track they nest:
a VM's phases follow one another inside their attempt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster_sim.report.spans import PHASES, Timeline, load, natural_key, redirected_intervals

CLUSTER_PID, STORAGE_PID, NODE_PID0 = 1, 2, 10


def us(t: float) -> int:
    return int(round(t * 1e6))


def _x(name: str, cat: str, start: float, end: float, pid: int, tid: int, args: dict[str, Any] | None = None) -> dict:  # type: ignore[type-arg]
    ts = us(start)
    ev: dict[str, Any] = {"name": name, "cat": cat, "ph": "X", "ts": ts, "dur": max(0, us(end) - ts),
                          "pid": pid, "tid": tid}
    if args:
        ev["args"] = args
    return ev


def _i(name: str, cat: str, t: float, pid: int, tid: int, scope: str = "t", args: dict[str, Any] | None = None) -> dict:  # type: ignore[type-arg]
    ev: dict[str, Any] = {"name": name, "cat": cat, "ph": "i", "s": scope, "ts": us(t), "pid": pid, "tid": tid}
    if args:
        ev["args"] = args
    return ev


def _meta(kind: str, pid: int, tid: int, **args: Any) -> dict:  # type: ignore[type-arg]
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": args}


def trace_events(tl: Timeline) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    nodes = list(tl.nodes)
    for extra in sorted(({s.node for s in tl.spans} | {a.node for a in tl.attempts}) - set(nodes), key=natural_key):
        if extra and extra not in nodes:
            nodes.append(extra)
    node_pid = {n: NODE_PID0 + i for i, n in enumerate(nodes)}
    vm_index = {vm: i + 1 for i, vm in enumerate(tl.vms)}

    def vm_tid(node: str, vm: str) -> int:
        # unique across processes too: some viewers key threads by tid alone
        return node_pid[node] * 100_000 + vm_index.setdefault(vm, len(vm_index) + 1)

    # ---- processes ----
    out.append(_meta("process_name", CLUSTER_PID, 0, name="cluster"))
    out.append(_meta("process_sort_index", CLUSTER_PID, 0, sort_index=0))
    out.append(_meta("thread_name", CLUSTER_PID, 1, name="backup job"))
    out.append(_meta("process_name", STORAGE_PID, 0, name="storage (array and CSVs)"))
    out.append(_meta("process_sort_index", STORAGE_PID, 0, sort_index=1))
    out.append(_meta("thread_name", STORAGE_PID, 1, name="snapshot faults"))
    for i, n in enumerate(nodes):
        pid = node_pid[n]
        out.append(_meta("process_name", pid, 0, name=n))
        out.append(_meta("process_sort_index", pid, 0, sort_index=10 + i))
        out.append(_meta("thread_name", pid, pid * 100_000, name=f"{n} (node)"))
        out.append(_meta("thread_sort_index", pid, pid * 100_000, sort_index=0))

    # ---- the job ----
    for k, (t0, t1, mode) in enumerate(tl.jobs):
        end = t1 if t1 is not None else tl.t_end
        out.append(_x(f"{tl.generation} backup" + (f" ({mode})" if mode else ""), "job", t0, end, CLUSTER_PID, 1,
                      {"job": k, "ended": t1 is not None}))
    for t, name, e in tl.instants:
        if name.startswith("scenario:"):
            out.append(_i(name, "scenario", t, CLUSTER_PID, 1, "g", {"kind": e.get("kind"), "index": e.get("index")}))

    # ---- VM tracks ----
    tracks: set[tuple[str, str]] = set()
    for s in [*tl.attempts, *tl.spans]:
        if s.node not in node_pid:
            continue
        key = (s.node, s.vm)
        if key not in tracks:
            tracks.add(key)
            tid = vm_tid(*key)
            out.append(_meta("thread_name", node_pid[s.node], tid, name=s.vm))
            out.append(_meta("thread_sort_index", node_pid[s.node], tid, sort_index=vm_index[s.vm]))
        pid, tid = node_pid[s.node], vm_tid(s.node, s.vm)
        if s.phase == "attempt":
            out.append(_x(f"attempt {s.attempt}", "attempt", s.start, s.end, pid, tid,
                          {"vm": s.vm, "node": s.node, "result": s.note}))
        else:
            out.append(_x(PHASES[s.phase][0], s.phase, s.start, s.end, pid, tid, {"vm": s.vm, "attempt": s.attempt}))
    for t, vm, node, reason in tl.failures:
        if node in node_pid:
            out.append(_i(f"attempt failed: {reason}", "fault", t, node_pid[node], vm_tid(node, vm),
                          args={"vm": vm, "reason": reason}))

    # ---- node tracks ----
    for d in tl.downs:
        if d.node not in node_pid:
            continue
        pid = node_pid[d.node]
        end = d.recovered if d.recovered is not None else tl.t_end
        out.append(_x("down", "node", d.crashed, end, pid, pid * 100_000,
                      {"detected_s": d.detected, "recovered_s": d.recovered}))
        out.append(_i("node crashed", "fault", d.crashed, pid, pid * 100_000, "p"))
        if d.detected is not None:
            out.append(_i("node failed (detected by the cluster)", "fault", d.detected, pid, pid * 100_000, "p"))
        if d.recovered is not None:
            out.append(_i("node recovered", "node", d.recovered, pid, pid * 100_000, "p"))
    for t, vm, node in tl.restarts:
        if node in node_pid:
            out.append(_i(f"restarted {vm} (failover)", "failover", t, node_pid[node], node_pid[node] * 100_000,
                          args={"vm": vm}))
    for t, vm, node in tl.refusals:
        if node in node_pid:
            out.append(_i(f"migration of {vm} refused", "migration", t, node_pid[node], node_pid[node] * 100_000,
                          args={"vm": vm}))
    for k, m in enumerate(tl.migrations):
        if m.src not in node_pid:
            continue
        pid = node_pid[m.src]
        end = m.end if m.end is not None else tl.t_end
        name = f"live migration {m.vm} -> {m.dst}"
        common = {"cat": "migration", "id": f"mig-{k}", "pid": pid, "tid": pid * 100_000, "name": name}
        out.append({**common, "ph": "b", "ts": us(m.start),
                    "args": {"vm": m.vm, "to": m.dst, "status": m.status, "downtime_ms": m.downtime_ms}})
        out.append({**common, "ph": "e", "ts": us(end)})

    # ---- storage ----
    csv_tid = {c: 100 + i for i, c in enumerate(tl.csvs)}
    for c, tid in csv_tid.items():
        out.append(_meta("thread_name", STORAGE_PID, tid, name=f"{c} redirected access"))
        out.append(_meta("thread_sort_index", STORAGE_PID, tid, sort_index=tid))
    for c, spans in redirected_intervals(tl.holds, tl.t_end).items():
        if c not in csv_tid:
            csv_tid[c] = 100 + len(csv_tid)
            out.append(_meta("thread_name", STORAGE_PID, csv_tid[c], name=f"{c} redirected access"))
        for a, z, kinds in spans:
            out.append(_x(f"redirected ({kinds.replace('_', ' ')})", "csv", a, z, STORAGE_PID, csv_tid[c],
                          {"csv": c, "kinds": kinds}))
    changes: dict[str, list[tuple[float, int]]] = {}
    for h in tl.holds:
        changes.setdefault(h.csv, []).append((h.start, 1))
        changes.setdefault(h.csv, []).append((h.end if h.end is not None else tl.t_end, -1))
    for c in tl.csvs:
        out.append({"name": f"{c} redirected holds", "ph": "C", "ts": us(min(0.0, tl.t_start)), "pid": STORAGE_PID,
                    "tid": 0, "args": {"holds": 0}})
        n = 0
        for t, d in sorted(changes.get(c, []), key=lambda x: (x[0], x[1])):
            n += d
            out.append({"name": f"{c} redirected holds", "ph": "C", "ts": us(t), "pid": STORAGE_PID, "tid": 0,
                        "args": {"holds": n}})
    for (ts, vs), name in ((tl.pending, "pending snapshots"), (tl.existing, "existing snapshots")):
        out.append({"name": name, "ph": "C", "ts": us(min(0.0, tl.t_start)), "pid": STORAGE_PID, "tid": 0,
                    "args": {"snapshots": 0}})
        for t, v in zip(ts.tolist(), vs.tolist(), strict=True):
            out.append({"name": name, "ph": "C", "ts": us(t), "pid": STORAGE_PID, "tid": 0,
                        "args": {"snapshots": int(v)}})
    for t, name, e in tl.instants:
        if name.startswith("scenario:"):
            continue
        args = {k: v for k, v in e.items() if k not in ("event", "sim_time_s")}
        out.append(_i(name.replace("_", " "), "fault", t, STORAGE_PID, 1, "t", args))
    # metadata first, then by time; at one instant an enclosing span before what it holds (some
    # importers nest same-time slices in file order)
    meta = [e for e in out if e["ph"] == "M"]
    rest = [e for e in out if e["ph"] != "M"]
    rest.sort(key=lambda e: (e["ts"], -e.get("dur", 0), e["ph"] == "e"))
    return meta + rest


def write(tl: Timeline, path: str | Path) -> Path:
    path = Path(path)
    doc = {
        "traceEvents": trace_events(tl),
        "displayTimeUnit": "ms",
        "otherData": {"scenario": str(tl.summary.get("scenario", "")), "generation": tl.generation,
                      "time": "simulated"},
    }
    path.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    return path


def write_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    return write(load(folder), folder / "trace.perfetto.json")
