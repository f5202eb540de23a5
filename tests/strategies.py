"""Hypothesis strategies for small, valid scenarios with random faults, and the invariants every
run of them must keep (shared by tests/test_properties.py and tests/test_regressions.py).

`scenario_dicts()` draws a scenario as a plain dict (what a YAML file holds): 1-6 nodes, 1-60
VMs from 1-4 random templates (Windows/Linux, integration services on/off, dynamic disks,
other file systems, no SCSI controller, .vhd/.vhds disks, configuration version 5.0, VMs off),
disks of 1-4 GiB, one or two of the four generations, a random backup configuration (provider,
batching, concurrency, retries, migration policy, auto-recovery, full/incremental, sometimes a
schedule of a full and incrementals) and 0-8 events (migrations, drains and resumes, crashes
and recoveries, snapshot faults, load balancing) at times inside the backup window: such small
disks are backed up in seconds to minutes, so the times lie in 0-2000 s, most of them early.

`check_invariants()` asserts what the auditor promises (and a little more, from the trace):
one outcome per VM per job, leaks only where the generation really leaks, per-LUN snapshot
limits, monotonic trace time, the job ended before run.until_s, no stray node operations,
and, with the verifier, no lost writes and no claim mismatch other than the documented ones.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import strategies as st

from cluster_sim.data.verify import EXPECTED
from cluster_sim.results import GenerationResult
from cluster_sim.scenario import GENERATIONS

TEMPLATE_NAMES = ("win", "lnx", "sql", "web", "dyn", "old", "noic", "off")
EVENT_KINDS = ("migrate_vm", "drain_node", "resume_node", "crash_node", "recover_node", "snapshot_fault",
               "load_balance")
UNTIL_S = 40000.0  # generous: a job of these scenarios ends within a few thousand seconds
EVENT_WINDOW_S = 2000.0


def _r(x: float) -> float:
    """Times and sizes with 3 decimals: readable YAML when a failing example is saved."""
    return round(float(x), 3)


def _weighted(draw: st.DrawFn, common: Any, *rare: Any) -> Any:
    """`common` three times out of four, else one of `rare` (hypothesis shrinks to `common`)."""
    if not rare or draw(st.integers(0, 3)) > 0:
        return common
    return draw(st.sampled_from(rare))


@st.composite
def templates(draw: st.DrawFn, name: str, max_count: int) -> dict[str, Any]:
    linux = draw(st.booleans())
    t: dict[str, Any] = {
        "template": name,
        "count": draw(st.integers(1, max_count)),
        "guest_os": "linux" if linux else "windows",
        "memory_gib": draw(st.sampled_from([1, 2, 4])),
        "disks": [
            {
                "size_gib": draw(st.sampled_from([1, 1.5, 2, 3, 4])),
                "format": _weighted(draw, "vhdx", "vhd", "vhds"),
                "used_fraction": draw(st.sampled_from([0.5, 0.1, 0.25, 1.0])),
            }
            for _ in range(draw(st.integers(1, 3)))
        ],
        "scsi_controller": _weighted(draw, True, False),
        "integration_services": _weighted(draw, True, False),
        "integration_services_backup": _weighted(draw, True, False),
        "dynamic_disks": False if linux else _weighted(draw, False, True),
        "filesystem": draw(st.sampled_from(["ext4", "xfs"])) if linux else _weighted(draw, "ntfs", "refs", "fat32"),
        "config_version": _weighted(draw, "8.0", "5.0", "9.0", "10.0"),
        "running": _weighted(draw, True, True, False),
    }
    if draw(st.booleans()):
        t["workload"] = {
            "read_iops": draw(st.sampled_from([100, 0, 1000])),
            "write_iops": draw(st.sampled_from([50, 0, 5, 500])),
            "dirty_mib_s": draw(st.sampled_from([20, 0, 200, 2000])),
            "working_set_fraction": draw(st.sampled_from([0.3, 0.05, 1.0])),
            "write_skew_zipf_s": draw(st.sampled_from([1.0, 0.0, 2.0])),
            "guest_flush_interval_s": draw(st.sampled_from([5, 0, 1, 30])),
        }
    return t


@st.composite
def _event_time(draw: st.DrawFn, start_s: float) -> float:
    """Inside the backup window: mostly in its first minutes, sometimes anywhere up to 2000 s."""
    early = draw(st.booleans())
    if early:
        return _r(start_s + draw(st.floats(0, 300, allow_nan=False)))
    return _r(draw(st.floats(0, EVENT_WINDOW_S, allow_nan=False)))


@st.composite
def events(draw: st.DrawFn, nodes: int, csvs: int, vms: list[str], start_s: float,
           kinds: tuple[str, ...] = EVENT_KINDS, max_events: int = 8) -> list[dict[str, Any]]:
    node_names = [f"node-{i + 1}" for i in range(nodes)]
    csv_names = [f"csv-{i + 1}" for i in range(csvs)]
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, max_events))):
        kind = draw(st.sampled_from(kinds))
        at = draw(_event_time(start_s))
        ev: dict[str, Any] = {"kind": kind, "at_s": at}
        if kind == "migrate_vm":
            ev["vm"] = draw(st.sampled_from(vms))
            if draw(st.booleans()):
                ev["to"] = draw(st.sampled_from(node_names))
        elif kind == "drain_node":
            ev["node"] = draw(st.sampled_from(node_names))
            ev["max_concurrent"] = draw(st.integers(1, 3))
        elif kind in ("resume_node", "recover_node"):
            ev["node"] = draw(st.sampled_from(node_names))
        elif kind == "crash_node":
            ev["node"] = draw(st.sampled_from(node_names))
            if draw(st.booleans()):  # the host comes back later
                back = _r(at + draw(st.floats(1, 1500, allow_nan=False)))
                out.append({"kind": "recover_node", "at_s": back, "node": ev["node"]})
        elif kind == "snapshot_fault":
            ev["csv"] = draw(st.sampled_from(csv_names))
            ev["code"] = draw(st.sampled_from(["provider_veto", "out_of_space", "timeout"]))
            ev["count"] = draw(st.integers(1, 3))
        elif kind == "load_balance":
            ev["every_s"] = draw(st.sampled_from([60, 300, 17.5]))
            ev["max_moves"] = draw(st.integers(1, 4))
            if draw(st.booleans()):
                ev["until_s"] = _r(at + draw(st.floats(1, 3000, allow_nan=False)))
        out.append(ev)
    return out


@st.composite
def scenario_dicts(draw: st.DrawFn, max_nodes: int = 6, max_vms: int = 60,
                   generations: tuple[str, ...] = GENERATIONS, max_generations: int = 2,
                   event_kinds: tuple[str, ...] = EVENT_KINDS, max_events: int = 8) -> dict[str, Any]:
    """A valid scenario dict (see the module docstring)."""
    nodes = draw(st.integers(1, max_nodes))
    names = draw(st.lists(st.sampled_from(TEMPLATE_NAMES), min_size=1, max_size=4, unique=True))
    per_template = max(1, max_vms // len(names))
    fleet = [draw(templates(n, per_template)) for n in names]
    total = sum(t["count"] for t in fleet)
    placement = draw(st.sampled_from(["round_robin", "spread"]))
    min_csvs = min(nodes, total) if placement == "round_robin" else 1
    csvs = draw(st.integers(min_csvs, max(min_csvs, nodes + 2)))

    gens = draw(st.lists(st.sampled_from(generations), min_size=1, max_size=max_generations, unique=True))
    start_s = _r(draw(st.sampled_from([0.0, 30.0, 120.0])))
    backup: dict[str, Any] = {
        "generations": gens,
        "provider": _weighted(draw, "hardware", "software"),
        "vms_per_snapshot": draw(st.sampled_from([1, 2, 3, 8])),
        "concurrent_vms_per_node": draw(st.integers(1, 4)),
        "retries": draw(st.integers(0, 3)),
        "retry_wait_s": draw(st.sampled_from([60, 0, 5, 600])),
        "mode": _weighted(draw, "full", "incremental"),
        "start_s": start_s,
        "migration_policy": draw(st.sampled_from(["block_and_retry", "allow", "abort_backup"])),
        "auto_recovery": _weighted(draw, True, False),
        "rct_survives_crash": draw(st.booleans()),
        "allow_standard_checkpoint_fallback": _weighted(draw, True, False),
        "verify": _weighted(draw, True, False),
        "guest_freeze_median_s": _weighted(draw, 3.0, 0.5, 25.0),
        "merge_mib_s": _weighted(draw, 200.0, 1.0),
        "max_luns_per_set": _weighted(draw, 64, 1, 2),
        "ws2016_set_node": draw(st.sampled_from(["first", "least_loaded"])),
        "stale_backup_hold_s": _weighted(draw, 1800.0, 60.0),
        "clear_stale_redirect": _weighted(draw, False, True),
        "snapshot_set_wait_limit_s": _weighted(draw, 1800.0, 30.0),
    }
    if draw(st.integers(0, 4)) == 0:  # a full, then one or two incrementals
        gaps = draw(st.lists(st.sampled_from([500.0, 2500.0]), min_size=1, max_size=2))
        at, sched = start_s, [{"at_s": start_s, "mode": "full"}]
        for gap in gaps:
            at += gap
            sched.append({"at_s": at, "mode": "incremental"})
        backup["schedule"] = sched

    vms = [f"{t['template']}-{k + 1:04d}" for t in fleet for k in range(t["count"])]
    return {
        "name": "generated",
        "seed": draw(st.integers(0, 2**32 - 1)),
        "cluster": {
            "nodes": nodes,
            "heartbeat_interval_s": draw(st.sampled_from([1.0, 0.5, 2.0])),
            "heartbeat_threshold": draw(st.sampled_from([10, 1, 3])),
            "failover_boot_s": draw(st.sampled_from([60.0, 0.0, 10.0])),
            "node_poll_interval_s": draw(st.sampled_from([600.0, 60.0])),
            "networks": {
                "shared_cluster_and_lm": draw(st.booleans()),
                "live_migration_mib_s": _weighted(draw, 1150.0, 100.0),
            },
            "migration": {
                "max_concurrent_per_node": draw(st.integers(1, 2)),
                "retry_s": draw(st.sampled_from([30.0, 10.0])),
                "max_wait_s": _weighted(draw, 7200.0, 300.0),
            },
        },
        "storage": {
            "csvs": csvs,
            "block_size_mib": draw(st.sampled_from([64.0, 16.0, 256.0])),
            "array": {
                "controllers": draw(st.integers(1, 3)),
                "max_snapshots_per_lun": _weighted(draw, 255, 1, 2, 3),
                "snapshot_commit_base_s": _weighted(draw, 0.5, 2.0, 6.0, 12.0),
                "snapshot_style": draw(st.sampled_from(["cow", "row"])),
            },
        },
        "fleet": fleet,
        "placement": placement,
        "backup": backup,
        "events": _keep_one_node(draw(events(nodes, csvs, vms, start_s, event_kinds, max_events)), nodes),
        "run": {"backend": "local", "until_s": UNTIL_S},
    }


def _down_at_end(evs: list[dict[str, Any]], node: str, killed_at: float | None = None) -> float | None:
    """When `node` went down for good (crashed or its actor killed, with no recovery after), or None.
    Events run in list (time) order; a killed actor dies after the events of its instant."""
    timeline = [(ev["at_s"], 0, ev["kind"]) for ev in evs if ev.get("node") == node]
    if killed_at is not None:
        timeline.append((killed_at, 1, "killed"))
    down = None
    for at, _order, kind in sorted(timeline, key=lambda x: (x[0], x[1])):  # stable: list order kept
        if kind in ("crash_node", "killed") and down is None:
            down = at
        elif kind == "recover_node" and down is not None:
            down = None
    return down


def _unavailable_since(evs: list[dict[str, Any]], node: str, killed_at: float | None = None) -> float | None:
    """When `node` stopped taking VMs for good (down, or drained and never resumed), or None."""
    down = _down_at_end(evs, node, killed_at)
    drained = None
    for ev in evs:
        if ev.get("node") == node and ev["kind"] == "drain_node" and drained is None:
            drained = ev["at_s"]
        elif ev.get("node") == node and ev["kind"] == "resume_node":
            drained = None
    times = [t for t in (down, drained) if t is not None]
    return max(times) if times else None


def _keep_one_node(evs: list[dict[str, Any]], nodes: int,
                   killed: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Events in time order, and a cluster that does not end without any node able to run VMs:
    if every node ends down (crashed, or its actor killed) or drained, the one that stopped last
    recovers and resumes 600 s after the last event. (VMs whose node failed wait for a node to
    fail over to; if none ever comes back the backup cannot finish, which is not a simulator bug.)"""
    evs = sorted(evs, key=lambda e: e["at_s"])
    killed = killed or {}
    since = [_unavailable_since(evs, f"node-{i + 1}", killed.get(f"node-{i + 1}")) for i in range(nodes)]
    if all(t is not None for t in since):
        last = max(range(nodes), key=lambda i: (since[i], i))
        at = _r(max([e["at_s"] for e in evs] + list(killed.values())) + 600.0)
        evs += [{"kind": "recover_node", "at_s": at, "node": f"node-{last + 1}"},
                {"kind": "resume_node", "at_s": at, "node": f"node-{last + 1}"}]
    return sorted(evs, key=lambda e: e["at_s"])


@st.composite
def runs(draw: st.DrawFn, **kw: Any) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """A scenario dict and the actor kills for `chaos.run_killing`: sometimes a node actor dies on its
    own at a random instant (the cluster finds it at its next liveness poll)."""
    d = draw(scenario_dicts(**kw))
    if not draw(st.booleans()):
        return d, []
    nodes = d["cluster"]["nodes"]
    kill = (f"node-{draw(st.integers(1, nodes))}", draw(_event_time(d["backup"]["start_s"])))
    d["events"] = _keep_one_node(d["events"], nodes, {kill[0]: kill[1]})
    return d, [kill]


# ------------------------------------------------------------------------------------------------
# invariants
# ------------------------------------------------------------------------------------------------
NO_LEAKS = {"snapshots": 0, "checkpoints": 0, "mounts": 0, "redirected_holds": 0, "hot_adds": 0}


def _documented_mismatch(gen: str, auto_recovery: bool, outcome: str, verdict: str, overrun: bool) -> bool:
    """The claim mismatches README/DOMAIN.md document: both are *torn* captures claimed consistent.
    - ws2008r2/ws2012 without host auto-recovery: the image is the host snapshot, newer than
      the guest snapshot its VSS metadata describes;
    - ws2008r2: a provider commit that overran the hold-writes limit, not detected."""
    if verdict != "torn":
        return False
    if gen in ("ws2008r2", "ws2012") and not auto_recovery and outcome == "app_consistent":
        return True
    return gen == "ws2008r2" and overrun


def check_invariants(sc: Any, g: GenerationResult) -> None:
    """Assert every invariant on one generation's result of scenario `sc` (a Scenario)."""
    s = g.summary
    gen = s.generation
    assert s.audit.ok, s.audit.violations
    # one row and one outcome per VM, in the summary, the rows and the trace
    names = [r.vm for r in g.vms]
    assert len(names) == len(set(names)) == s.vm_count == sc.vm_count()
    assert all(r.outcome for r in g.vms), [r.vm for r in g.vms if not r.outcome]
    assert sum(s.outcomes.model_dump().values()) == s.vm_count
    jobs = len(s.jobs)
    outcome_events = Counter(ids["vm"] for _t, ev, ids in g.trace.events if ev == "vm_outcome")
    assert outcome_events == Counter({n: jobs for n in names}), outcome_events
    assert "horizon_reached" not in s.failures_by_reason, s.failures_by_reason
    # the job ended before run.until_s, and simulated time never ran backwards
    assert s.sim_end_s < sc.run.until_s
    times = [t for t, _ev, _ids in g.trace.events]
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))
    # migrations: every abort of a backup by a migration is counted once, and only a migration that
    # had somewhere to go aborts one (its next event is not a failure for want of a target)
    # (the events after the abort in trace order: a request failed earlier at the same instant, e.g. to
    # a node being drained, is not the migration that aborted the backup)
    events = g.trace.events
    aborts = [(i, ids["vm"]) for i, (_t, ev, ids) in enumerate(events) if ev == "backup_aborted_by_migration"]
    assert len(aborts) == s.migrations.aborted, (aborts, s.migrations)
    for i, vm in aborts:
        after = next(((t2, ev, ids) for t2, ev, ids in events[i + 1:]
                      if ids.get("vm") == vm and ev in ("migration_start", "migration_failed",
                                                        "vm_config_moved")), None)
        assert after is None or not (after[1] == "migration_failed" and after[2]["reason"] == "no_target"), after
    m = s.migrations
    assert m.requested == m.completed + m.failed, m  # nothing in flight at the end of a finished run
    assert m.retried <= m.refused and m.aborted <= m.requested, m
    # (every CSV coordinated by a node that is up, the counters adding up exactly and each job's window
    # above its copy-time bound are the auditor's: s.audit.ok above)
    # the window is never below its copy-time lower bound
    assert s.backup_window_s >= s.window_lower_bound_s, (s.backup_window_s, s.window_lower_bound_s)
    # per-LUN snapshot limit
    assert s.peak_snapshots_per_lun <= sc.storage.array.max_snapshots_per_lun
    assert all(c.peak_snapshots <= sc.storage.array.max_snapshots_per_lun for c in g.csvs)
    # leaks: only what the generation really leaks (ws2012 KB2878635: a failover during a CSV
    # snapshot, or a dead node's snapshot); everything else is released or merged
    leaks = s.leaks.model_dump()
    allowed = dict(NO_LEAKS)
    if gen == "ws2012" and s.node_failures:
        allowed["snapshots"] = leaks["snapshots"]
    if s.vms_without_host:  # no node left to run them: their AVHDX waits for one (counted as leaked)
        allowed["checkpoints"] = leaks["checkpoints"]
    assert leaks == allowed, (gen, leaks, [f.model_dump() for f in s.node_failures])
    # verification: every backup restored; no lost writes; only documented claim mismatches
    v = s.verification
    assert v.lost_writes == 0, v
    if sc.backup is not None and sc.backup.verify:
        kept = sum(1 for _t, ev, ids in g.trace.events if ev == "vm_outcome" and ids["outcome"] != "failed")
        assert v.restored == kept, (v, kept)
        # set ids restart with each job of a schedule: key them by job
        job = -1
        members: dict[tuple[int, str], list[str]] = {}
        overrun_vms: set[tuple[int, str]] = set()
        surprises = []
        mismatches = 0
        for _t, ev, ids in g.trace.events:
            if ev == "job_start":
                job += 1
            elif ev == "snapshot_set_start":
                members[(job, ids["set"])] = ids["members"]
            elif ev == "snapshot_set_done" and ids["over_limit"]:
                overrun_vms.update((job, vm) for vm in members.get((job, ids["set"]), ()))
            if ev != "vm_verified":
                continue
            expected = EXPECTED.get(ids["outcome"])
            if expected is None or expected == ids["verdict"]:
                continue
            mismatches += 1
            if not _documented_mismatch(gen, sc.backup.auto_recovery, ids["outcome"], ids["verdict"],
                                        (job, ids["vm"]) in overrun_vms):
                surprises.append((ids["vm"], ids["outcome"], ids["verdict"]))
        assert mismatches == v.claim_mismatches
        assert not surprises, surprises
    else:
        assert v.restored == 0


# ------------------------------------------------------------------------------------------------
# the fault events of issue 15 (README "Fault events"): generators and their invariants
# ------------------------------------------------------------------------------------------------
FAULT_EVENT_KINDS = ("partition", "controller_fail", "storage_path_loss", "target_outage", "target_slowdown",
                     "backup_server_crash")


@st.composite
def fault_events(draw: st.DrawFn, nodes: int, controllers: int, start_s: float,
                 kinds: tuple[str, ...] = FAULT_EVENT_KINDS, max_events: int = 3) -> list[dict[str, Any]]:
    """0-`max_events` fault events inside the backup window, each healing after 1-1500 s. A
    partition needs two nodes; at most `controllers - 1` distinct controllers ever fail (one is
    always left to serve the LUNs); a crashed backup application comes back half of the time."""
    node_names = [f"node-{i + 1}" for i in range(nodes)]
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, max_events))):
        kind = draw(st.sampled_from(kinds))
        ev: dict[str, Any] = {"kind": kind, "at_s": draw(_event_time(start_s))}
        if kind != "backup_server_crash":
            ev["duration_s"] = _r(draw(st.sampled_from([1.0, 15.0, 120.0, 1500.0])) * draw(st.floats(0.5, 1.5)))
        if kind == "partition":
            if nodes < 2:
                continue
            ev["nodes"] = sorted(draw(st.lists(st.sampled_from(node_names), min_size=1, max_size=nodes - 1,
                                               unique=True)), key=node_names.index)
        elif kind == "controller_fail":
            if controllers < 2:
                continue
            ev["controller"] = draw(st.integers(1, controllers - 1))
        elif kind == "storage_path_loss":
            ev["node"] = draw(st.sampled_from(node_names))
        elif kind == "target_slowdown":
            ev["factor"] = draw(st.sampled_from([0.5, 0.1, 0.01]))
        elif kind == "backup_server_crash" and draw(st.booleans()):
            ev["restart_after_s"] = _r(draw(st.sampled_from([5.0, 60.0, 600.0])))
        out.append(ev)
    return out


@st.composite
def fault_runs(draw: st.DrawFn, kinds: tuple[str, ...] = FAULT_EVENT_KINDS, max_faults: int = 3,
               **kw: Any) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """`runs()` (a scenario with the older events, sometimes an actor that dies on its own) plus
    fault events, and sometimes a quorum witness."""
    d, kill = draw(runs(**kw))
    c = d["cluster"]
    c["witness"] = draw(st.booleans())
    extra = draw(fault_events(c["nodes"], d["storage"]["array"]["controllers"], d["backup"]["start_s"], kinds,
                              max_faults))
    d["events"] = sorted(d["events"] + extra, key=lambda e: e["at_s"])
    return d, kill


def phase_windows(g: GenerationResult, vm: str) -> list[tuple[str, float, float]]:
    """The phases of a VM's first attempt in a clean run, from its trace: (phase, start, end) with
    end > start. Phases: `prepare` (its preparation: guest freeze or save), `checkpoint` (to the
    AVHDX), `snapshot_set` (the set holding it, from its start to its commit), `after_set` (to its
    copy: surfacing, auto-recovery or fix-up), `copy`, `merge` (to its AVHDX merged), `release`
    (to its outcome)."""
    first: dict[str, float] = {}
    set_start: dict[str, float] = {}
    my_set = ""
    for t, ev, ids in g.trace.events:
        if ev == "snapshot_set_start":
            set_start[ids["set"]] = t
            if vm in ids["members"] and not my_set:
                my_set = ids["set"]
        if ids.get("vm") != vm and not (ev == "snapshot_set_done" and ids.get("set") == my_set):
            continue
        key = "set_done" if ev == "snapshot_set_done" else ev
        first.setdefault(key, t)
    spans = [
        ("prepare", first.get("vm_prepare"), first.get("guest_frozen")),
        ("checkpoint", first.get("guest_frozen"), first.get("checkpoint_created")),
        ("snapshot_set", set_start.get(my_set), first.get("set_done")),
        ("after_set", first.get("set_done"), first.get("copy_start")),
        ("copy", first.get("copy_start"), first.get("copy_end")),
        ("merge", first.get("copy_end"), first.get("checkpoint_merged")),
        ("release", first.get("copy_end"), first.get("vm_outcome")),
    ]
    return [(name, a, b) for name, a, b in spans if a is not None and b is not None and b > a]


def aimed_fault(kind: str, g: GenerationResult, sc: Any, vm: str, at: float, pick: Any) -> list[dict[str, Any]]:
    """Fault events of `kind` aimed at `vm` at instant `at` of a clean run `g`: its host crashes
    (and comes back), its host is cut off from the others, its host loses its storage path, its
    LUN's controller fails, the backup target goes away, or the backup application dies. `pick(xs)`
    chooses among options (a hypothesis draw)."""
    row = next(r for r in g.vms if r.vm == vm)
    host = _host_at(g, vm, at) or row.node
    nodes = [f"node-{i + 1}" for i in range(sc.cluster.nodes)]
    dur = pick([15.0, 120.0, 900.0])
    if kind == "crash_node":
        return [{"kind": "crash_node", "at_s": at, "node": host},
                {"kind": "recover_node", "at_s": _r(at + pick([30.0, 600.0])), "node": host}]
    if kind == "partition":
        return [{"kind": "partition", "at_s": at, "nodes": [host], "duration_s": dur}] if len(nodes) > 1 else []
    if kind == "storage_path_loss":
        return [{"kind": "storage_path_loss", "at_s": at, "node": host, "duration_s": dur}]
    if kind == "controller_fail":
        k = sc.storage.array.controllers
        if k < 2:
            return []
        lun_index = int(row.csv.split("-")[1]) - 1  # csv-i's LUN is first owned by controller (i-1) % k + 1
        return [{"kind": "controller_fail", "at_s": at, "controller": lun_index % k + 1, "duration_s": dur}]
    if kind == "target_outage":
        return [{"kind": "target_outage", "at_s": at, "duration_s": dur}]
    ev: dict[str, Any] = {"kind": "backup_server_crash", "at_s": at}
    restart = pick([None, 30.0, 600.0])
    if restart is not None:
        ev["restart_after_s"] = restart
    return [ev]


def _host_at(g: GenerationResult, vm: str, at: float) -> str | None:
    """The node the VM's attempt ran on at instant `at` (its last vm_attempt before it)."""
    host = None
    for t, ev, ids in g.trace.events:
        if t > at:
            break
        if ev == "vm_attempt" and ids["vm"] == vm:
            host = ids["node"]
    return host


def _intervals(g: GenerationResult, start: str, end: str | tuple[str, ...],
               key: str | None = None) -> list[tuple[Any, float, float]]:
    """(key value, from, to) for each `start` event up to the next `end` event with the same key
    (to: the end of the run if none). A `node_recovered` of a node still outside the membership
    (member false) ends nothing."""
    ends = (end,) if isinstance(end, str) else end
    open_: dict[Any, float] = {}
    out = []
    for t, ev, ids in g.trace.events:
        k = ids.get(key) if key else None
        if ev == start and k not in open_:
            open_[k] = t
        elif ev in ends and k in open_ and ids.get("member", True):
            out.append((k, open_.pop(k), t))
    out += [(k, t0, float("inf")) for k, t0 in open_.items()]
    return out


def check_fault_invariants(sc: Any, g: GenerationResult) -> None:
    """`check_invariants`, with what injected faults left behind counted against them, and what
    the fault events promise (README "Fault events"):
    - the fault ledger accounts for no more than has leaked, and only faults that ran left anything;
    - no VM fails `backup_server_crashed` unless the backup application crashed and one of its
      crashes had no restart; no job step starts while the application is down;
    - no attempt starts on a node while its side of a partition has no quorum;
    - no snapshot LUN is surfaced on a node while it has no storage fabric;
    - no copy ends while the backup target is unreachable;
    - a LUN moves only away from the controller it is on, and every LUN is back on its own
      controller once the failed controllers have returned."""
    s = g.summary
    kinds = {ev.kind for ev in sc.events}
    leaks = s.leaks.model_dump()
    explained = dict.fromkeys(leaks, 0)
    for cause, lk in (s.fault_leaks or {}).items():
        assert cause in {"backup_server_crash", "controller_fail", "storage_path_loss"}, cause
        assert cause in kinds, (cause, kinds)
        for k, n in lk.model_dump().items():
            explained[k] += n
    assert all(explained[k] <= leaks[k] for k in leaks), (explained, leaks)
    rest = s.leaks.model_copy(update={k: leaks[k] - explained[k] for k in leaks})
    check_invariants(sc, g.model_copy(update={"summary": s.model_copy(update={"leaks": rest})}))

    crashes = [ev for ev in sc.events if ev.kind == "backup_server_crash"]
    if "backup_server_crashed" in s.failures_by_reason:
        assert any(ev.restart_after_s is None for ev in crashes), s.failures_by_reason
    down = _intervals(g, "backup_server_crashed", "backup_server_restarted")
    lost = _intervals(g, "quorum_lost", ("node_rejoined", "node_recovered"), "node")
    no_fabric = _intervals(g, "storage_path_lost", "storage_path_restored", "node")
    outages = _intervals(g, "target_outage", "target_restored")
    k = sc.storage.array.controllers
    home = {f"csv-{i + 1}": i % k + 1 for i in range(sc.storage.csvs)}  # as the array places LUNs
    owner = dict(home)
    for t, ev, ids in g.trace.events:
        if ev in ("vm_attempt", "snapshot_set_start", "copy_start"):
            assert not any(a < t < b for _k, a, b in down), (ev, t, ids, down)
        if ev == "vm_attempt":
            assert not any(k == ids["node"] and a < t < b for k, a, b in lost), (t, ids, lost)
        if ev == "snapshots_surfaced":
            assert not any(k == ids["node"] and a <= t < b for k, a, b in no_fabric), (t, ids, no_fabric)
        if ev == "copy_end":
            assert not any(a < t < b for _k, a, b in outages), (t, ids, outages)
        if ev in ("lun_failover", "lun_failback"):
            assert owner[ids["csv"]] == ids["controller"] != ids["to"], (t, ev, ids, owner)
            owner[ids["csv"]] = ids["to"]
    ctrl_end = max((ev.at_s + ev.duration_s for ev in sc.events if ev.kind == "controller_fail"), default=None)
    if ctrl_end is not None and ctrl_end < s.sim_end_s:
        assert owner == home, (owner, home)
