"""Property tests: generated scenarios with random faults keep every invariant of the auditor.

Each example is a small valid scenario (tests/strategies.py: 1-6 nodes, 1-60 VMs, random
template mixes, one or two of the four generations, random migrations, drains, crashes and
recoveries, snapshot faults and load balancing inside the backup window; sometimes a node actor
that dies on its own), run on the local backend; `check_invariants` asserts, per generation:
one outcome per VM, leaks only where the generation really leaks (ws2012, KB2878635), per-LUN
snapshot limits, monotonic trace time, the job ended before run.until_s, no stray node
operations, and with the verifier no lost writes and only the documented claim mismatches.

Hypothesis profiles: `ci` (the default, >= 500 examples) and `soak` (5000, `make soak`); pick
one with HYPOTHESIS_PROFILE. A failure that hypothesis shrinks is kept as a named regression
under scenarios/regressions/ (tests/test_regressions.py runs them all).

The auditor (so every example) also checks that every CSV is coordinated by a node that is up, that
the migration counters add up exactly (requested = completed + failed + in flight; refused = retried
+ refused too long + waiting) and that no job's window is below its copy-time lower bound;
check_invariants adds that every backup aborted by a migration is counted once and that no migration
without a destination aborts one.

The backend-equivalence tests (marked slow) run a few generated scenarios on the local and Ray
backends and compare summary.json byte for byte, kill a Ray node actor at a random instant (the
scenario's "actor died on its own" hook: a node failure on both backends), and kill a node actor's
worker process for real at a random batch (a machinery fault: rebuilt from its log, the results
equal the local backend's, no node failure).

The fault events (README "Fault events", tests/strategies.py `fault_runs`, `check_fault_invariants`):
generated scenarios with partitions, controller failures, lost storage paths, target outages and
slowdowns and crashes of the backup application; faults aimed at the midpoint of a random VM's
backup phase in a clean run of the same scenario; and a second crash while the first crashed
node's VMs boot on the survivors. Their example counts are set per profile below.
"""

from __future__ import annotations

import copy
import os

import pytest
from chaos import run_killing
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st
from strategies import (
    _host_at,
    _keep_one_node,
    aimed_fault,
    check_fault_invariants,
    check_invariants,
    fault_runs,
    phase_windows,
    runs,
    scenario_dicts,
)

import cluster_sim
from cluster_sim.results import summary_json
from cluster_sim.scenario import scenario_from_dict

settings.register_profile(
    # the suite's regression run: the same 500 generated scenarios every time (derandomized);
    # `make soak` explores new ones
    "ci", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True,
    derandomize=True,
)
settings.register_profile(
    "soak", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


@given(runs())
def test_generated_scenarios_keep_every_invariant(case) -> None:  # type: ignore[no-untyped-def]
    d, kill = case
    sc = scenario_from_dict(d)
    res = run_killing(sc, kill, backend="local")
    assert [g.summary.generation for g in res.generations] == d["backup"]["generations"]
    for g in res.generations:
        check_invariants(sc, g)


def test_the_strategy_draws_valid_scenarios_across_the_whole_space() -> None:
    """Sanity of the strategy itself (no simulation): every draw validates, and the draws cover
    every generation, event kind, node count and both placements."""
    seen: dict[str, set] = {"gens": set(), "kinds": set(), "nodes": set(), "placement": set()}

    @settings(max_examples=300, deadline=None, phases=[Phase.generate], database=None, derandomize=True)
    @given(runs())
    def draw(case) -> None:  # type: ignore[no-untyped-def]
        d, kill = case
        sc = scenario_from_dict(d)
        assert 1 <= sc.cluster.nodes <= 6 and 1 <= sc.vm_count() <= 60
        assert all(1 <= disk.size_gib <= 4 for t in sc.fleet for disk in t.disks)
        assert 1 <= len(sc.backup.generations) <= 2
        assert all(ev.at_s < sc.run.until_s for ev in sc.events)
        assert [ev.at_s for ev in sc.events] == sorted(ev.at_s for ev in sc.events)
        seen["gens"].update(sc.backup.generations)
        seen["kinds"].update(ev.kind for ev in sc.events)
        seen["nodes"].add(sc.cluster.nodes)
        seen["placement"].add(sc.placement)

    draw()
    assert seen["gens"] == {"ws2008r2", "ws2012", "ws2012r2", "ws2016"}
    assert seen["kinds"] == {"migrate_vm", "drain_node", "resume_node", "crash_node", "recover_node",
                             "snapshot_fault", "load_balance"}
    assert seen["nodes"] == {1, 2, 3, 4, 5, 6}
    assert seen["placement"] == {"round_robin", "spread"}


def test_a_cluster_that_ends_without_any_available_node_gets_one_back() -> None:
    crash1 = {"kind": "crash_node", "at_s": 5.0, "node": "node-1"}
    evs = [crash1, {"kind": "crash_node", "at_s": 9.0, "node": "node-2"},
           {"kind": "recover_node", "at_s": 7.0, "node": "node-2"}]
    back = [{"kind": "recover_node", "at_s": 609.0, "node": "node-2"},
            {"kind": "resume_node", "at_s": 609.0, "node": "node-2"}]
    out = _keep_one_node(evs, 2)
    assert out[-2:] == back
    assert [e["at_s"] for e in out] == [5.0, 7.0, 9.0, 609.0, 609.0]
    # a node killed behind the cluster's back counts as down, a drained node as unavailable
    assert _keep_one_node([crash1], 2, {"node-2": 50.0})[-1]["at_s"] == 650.0
    drained = _keep_one_node([crash1, {"kind": "drain_node", "at_s": 3.0, "node": "node-2"}], 2)
    assert drained[-2:] == [{"kind": "recover_node", "at_s": 605.0, "node": "node-1"},
                            {"kind": "resume_node", "at_s": 605.0, "node": "node-1"}]
    # one node still able to take VMs at the end: nothing added
    assert _keep_one_node([crash1], 2) == [crash1]
    resumed = [{"kind": "drain_node", "at_s": 3.0, "node": "node-2"}, crash1,
               {"kind": "resume_node", "at_s": 8.0, "node": "node-2"}]
    assert _keep_one_node(resumed, 2) == resumed


# ---- backend equivalence -------------------------------------------------------------------------
# small scenarios (at most 3 nodes, 12 VMs): each Ray run starts one actor per node
EQUIVALENCE = settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck),
                       phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None)


@pytest.mark.slow
@EQUIVALENCE
@given(d=scenario_dicts(max_nodes=3, max_vms=12))
def test_local_and_ray_backends_give_byte_identical_summaries(ray_session, d) -> None:  # type: ignore[no-untyped-def]
    sc = scenario_from_dict(d)
    local = cluster_sim.run(sc, backend="local")
    ray_ = cluster_sim.run(sc, backend="ray")
    assert [g.summary.generation for g in ray_.generations] == d["backup"]["generations"]
    for a, b in zip(local.generations, ray_.generations, strict=True):
        assert summary_json(a.summary) == summary_json(b.summary)
        assert [r.model_dump() for r in a.vms] == [r.model_dump() for r in b.vms]


@pytest.mark.slow
@EQUIVALENCE
@given(d=scenario_dicts(max_nodes=3, max_vms=12, max_generations=1,
                        event_kinds=("migrate_vm", "snapshot_fault", "load_balance"), max_events=3),
       data=st.data())
def test_a_ray_actor_dying_at_a_random_instant_is_that_nodes_failure(ray_session, d, data) -> None:  # type: ignore[no-untyped-def]
    """kill_actors: the actor dies behind the cluster's back at a random instant of the backup
    window; the second liveness poll after it (or the end of the run) finds it and the node fails (how
    "actor_died"), its VMs fail over, every VM still gets one outcome, the audit is clean."""
    if d["cluster"]["nodes"] == 1:  # a survivor to fail over to (no crash or drain events here)
        d["cluster"]["nodes"] = 2
        d["storage"]["csvs"] = max(d["storage"]["csvs"], 2)
    sc = scenario_from_dict(d)
    (quiet,) = cluster_sim.run(sc, backend="local").generations
    start, window = quiet.summary.jobs[0].start_s, quiet.summary.backup_window_s
    node = data.draw(st.sampled_from([f"node-{i + 1}" for i in range(sc.cluster.nodes)]), label="node")
    at = round(start + window * data.draw(st.floats(0, 0.99), label="fraction of the window"), 3)
    (g,) = run_killing(sc, [(node, at)], backend="ray").generations
    fails = [(f.node, f.how) for f in g.summary.node_failures]
    assert fails == [(node, "actor_died")], fails
    assert at <= g.summary.node_failures[0].detected_s <= at + 2 * sc.cluster.node_poll_interval_s + 1e-6
    check_invariants(sc, g)
    (loc,) = run_killing(sc, [(node, at)], backend="local").generations
    assert summary_json(loc.summary) == summary_json(g.summary)


@pytest.mark.slow
@EQUIVALENCE
@given(d=scenario_dicts(max_nodes=3, max_vms=12, max_generations=1), data=st.data())
def test_a_real_actor_process_killed_at_a_random_batch_changes_no_result(ray_session, d, data) -> None:  # type: ignore[no-untyped-def]
    from ray_helpers import KillingBackend

    from cluster_sim.simulation import run_generation

    sc = scenario_from_dict(d)
    (local,) = cluster_sim.run(sc, backend="local").generations
    victim = data.draw(st.sampled_from([f"node-{i + 1}" for i in range(sc.cluster.nodes)]), label="victim")
    at_send = data.draw(st.integers(1, 4), label="at batch")
    be = KillingBackend([f"node-{i + 1}" for i in range(sc.cluster.nodes)], victim=victim, at_send=at_send)
    try:
        be.revive_all()
        g = run_generation(sc, sc.backup.generations[0], be)
    finally:
        be.close()
    assert summary_json(local.summary) == summary_json(g.summary)
    assert [r.model_dump() for r in local.vms] == [r.model_dump() for r in g.vms]
    # the victim may get fewer batches than at_send (e.g. a node crashed early), and the signal may
    # land after it answered its last batch of the run: its loss shows once it is sent another
    if be.hit and be.after:
        assert any(n.startswith(f"{victim}: Ray actor lost") for n in be.notes), be.notes


# ---- the fault events of issue 15 (README "Fault events") ------------------------------------------
# Examples per profile: the ci run stays within about 25 s more than before; `make soak` explores more.
FAULT_EXAMPLES = {"ci": 200, "soak": 2000}.get(PROFILE, 200)
AIMED_EXAMPLES = {"ci": 120, "soak": 1000}.get(PROFILE, 120)
CASCADE_EXAMPLES = {"ci": 60, "soak": 500}.get(PROFILE, 60)
AIMED_KINDS = ("crash_node", "partition", "storage_path_loss", "controller_fail", "target_outage",
               "backup_server_crash")
# the background of aimed faults: events that do not take nodes away
QUIET_EVENTS = ("migrate_vm", "snapshot_fault", "load_balance")


def _with_events(d: dict, extra: list[dict]) -> dict:
    out = copy.deepcopy(d)
    out["events"] = sorted(out["events"] + extra, key=lambda e: e["at_s"])
    return out


@settings(max_examples=FAULT_EXAMPLES)
@given(fault_runs())
def test_generated_scenarios_with_fault_events_keep_every_invariant(case) -> None:  # type: ignore[no-untyped-def]
    """Partitions, controller failures, lost storage paths, target outages and slowdowns and crashes
    of the backup application, on top of the older random events: every invariant holds, and what
    the faults left behind is accounted for."""
    sc = scenario_from_dict(case[0])
    for g in run_killing(sc, case[1], backend="local").generations:
        check_fault_invariants(sc, g)


@pytest.mark.slow
@EQUIVALENCE
@given(case=fault_runs(max_nodes=3, max_vms=12))
def test_generated_fault_scenarios_give_byte_identical_summaries_on_both_backends(ray_session, case) -> None:  # type: ignore[no-untyped-def]
    sc = scenario_from_dict(case[0])
    local = cluster_sim.run(sc, backend="local")
    ray_ = cluster_sim.run(sc, backend="ray")
    assert [summary_json(g.summary) for g in local.generations] == [summary_json(g.summary) for g in ray_.generations]


@settings(max_examples=AIMED_EXAMPLES)
@given(d=scenario_dicts(max_nodes=4, max_vms=24, max_generations=1, event_kinds=QUIET_EVENTS, max_events=2),
       data=st.data())
def test_faults_aimed_at_a_backup_phase_keep_every_invariant(d, data) -> None:  # type: ignore[no-untyped-def]
    """A clean run of the generated scenario gives each VM's phases (preparation, checkpoint, snapshot
    set, surfacing and auto-recovery, copy, merge, release); a fault lands at the midpoint of a
    random VM's phase: its host crashes, is cut off, loses its storage path, its LUN's controller
    fails, the target goes away, or the backup application dies."""
    d["cluster"]["witness"] = data.draw(st.booleans(), label="witness")
    sc = scenario_from_dict(d)
    (clean,) = cluster_sim.run(sc, backend="local").generations
    targets = [(r.vm, ph) for r in clean.vms for ph in phase_windows(clean, r.vm)]
    assume(targets)
    vm, (phase, a, b) = data.draw(st.sampled_from(targets), label="vm and phase")
    kind = data.draw(st.sampled_from(AIMED_KINDS), label="fault")
    evs = aimed_fault(kind, clean, sc, vm, (a + b) / 2, lambda xs: data.draw(st.sampled_from(xs)))
    assume(evs)
    event(f"{kind} during {phase}")
    sc2 = scenario_from_dict(_with_events(d, evs))
    (g,) = cluster_sim.run(sc2, backend="local").generations
    check_fault_invariants(sc2, g)


@settings(max_examples=CASCADE_EXAMPLES)
@given(d=scenario_dicts(max_nodes=5, max_vms=24, max_generations=1, event_kinds=QUIET_EVENTS, max_events=2),
       data=st.data())
def test_a_second_crash_while_failed_over_vms_boot_keeps_every_invariant(d, data) -> None:  # type: ignore[no-untyped-def]
    """Cascading failures: a VM's host crashes in the middle of one of its backup phases; while the
    VMs of that host boot on the survivors, the node one of them boots on crashes too (sometimes
    both come back later)."""
    c = d["cluster"]
    if c["nodes"] < 3:  # two crashes and a survivor
        c["nodes"] = 3
        d["storage"]["csvs"] = max(d["storage"]["csvs"], 3)
    c["failover_boot_s"] = data.draw(st.sampled_from([10.0, 60.0]), label="boot")
    sc = scenario_from_dict(d)
    (clean,) = cluster_sim.run(sc, backend="local").generations
    targets = [(r.vm, ph) for r in clean.vms for ph in phase_windows(clean, r.vm)]
    assume(targets)
    vm, (_phase, a, b) = data.draw(st.sampled_from(targets), label="vm and phase")
    at = (a + b) / 2
    host = _host_at(clean, vm, at) or next(r.node for r in clean.vms if r.vm == vm)
    first = [{"kind": "crash_node", "at_s": at, "node": host}]
    (g1,) = cluster_sim.run(scenario_from_dict(_with_events(d, first)), backend="local").generations
    detected = [t for t, ev, ids in g1.trace.events if ev == "node_failed" and ids["node"] == host and t >= at]
    assume(detected)
    boots = [(ids["node"], t) for t, ev, ids in g1.trace.events
             if ev == "vm_restarted" and detected[0] <= t and ids["node"] != host]
    assume(boots)
    second, t_up = data.draw(st.sampled_from(boots), label="boot target")
    when = detected[0] + (t_up - detected[0]) * data.draw(st.floats(0.05, 0.95), label="into the boot")
    evs = first + [{"kind": "crash_node", "at_s": when, "node": second}]
    if data.draw(st.booleans(), label="they come back"):
        evs += [{"kind": "recover_node", "at_s": when + 300.0, "node": host},
                {"kind": "recover_node", "at_s": when + 600.0, "node": second}]
    sc3 = scenario_from_dict(_with_events(d, evs))
    (g,) = cluster_sim.run(sc3, backend="local").generations
    assert [f.node for f in g.summary.node_failures][:2] == [host, second], g.summary.node_failures
    check_fault_invariants(sc3, g)
