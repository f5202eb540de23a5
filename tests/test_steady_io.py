"""VM I/O as steady flows on routes (issue 20): a CSV redirected or back moves one route per node,
and the links carry the same loads as when every VM group had flows of its own."""

from __future__ import annotations

import pytest
from backup_helpers import scenario_dict, template

from cluster_sim.scenario import scenario_from_dict


def _cluster(nodes: int = 3, per_template: int = 3):  # type: ignore[no-untyped-def]
    from cluster_sim.cluster.model import ClusterModel
    from cluster_sim.cluster.nodes import LocalBackend
    from cluster_sim.kernel.rng import Streams
    from cluster_sim.scenario.placement import place_fleet

    web = {"read_iops": 60, "write_iops": 20, "io_size_kib": 16}
    d = scenario_dict(fleet=[template("win", count=per_template), template("web", count=per_template, workload=web)],
                      nodes=nodes, csvs=1, placement="spread")
    d.pop("backup")
    sc = scenario_from_dict(d)
    cm = ClusterModel(sc, place_fleet(sc), LocalBackend([f"node-{i}" for i in range(1, nodes + 1)]),
                      Streams(sc.seed))
    cm.start()
    return cm


def test_a_redirected_csv_moves_one_route_per_other_node_and_its_vms_io_crosses_the_cluster_network() -> None:
    # 3 nodes, one CSV (csv-1); win VMs do 100 + 50 IOPS of 8 KiB (1.171875 MiB/s), web VMs 60 + 20
    # IOPS of 16 KiB (1.25 MiB/s), spread over the nodes by the seed. Redirected, each other node's
    # I/O crosses its own cluster NIC and the coordinator's, then the coordinator's fabric: the
    # coordinator's fabric carries all 7.265625 MiB/s, its NIC everything but its own VMs', another
    # node's NIC and nothing on its fabric. One route moves per other node hosting VMs, whatever
    # its number of VM groups; back again when the hold is released.
    cm = _cluster()
    net, io = cm.net, cm.io
    vm_mib_s = {"win": (100 + 50) * 8 / 1024, "web": (60 + 20) * 16 / 1024}
    assert vm_mib_s == {"win": 1.171875, "web": 1.25}
    per_node = {n: sum(vm_mib_s[vm.split("-")[0]] for vm, h in cm.host.items() if h == n) for n in cm.nodes}
    total = sum(per_node.values())
    assert total == 3 * 1.171875 + 3 * 1.25
    coord = cm.csvs["csv-1"].coordinator
    others = [n for n in cm.nodes if n != coord and per_node[n] > 0]
    assert others  # the seed spreads VMs over more than the coordinator
    cm.env.run(until=5.0)
    assert all(g.read_flow.steady and g.write_flow.steady for g in io.groups)
    assert len(io._routes) == sum(1 for n in cm.nodes if per_node[n] > 0)  # one per (node, CSV)
    load = net.link_load()
    assert {n: load[f"fabric:{n}"] for n in cm.nodes} == pytest.approx(per_node, rel=1e-12)

    calls = []  # the route moves handed to the kernel, a list per call
    move_routes = net.move_routes
    net.move_routes = lambda b: calls.append([r for r, _ in b.moves]) or move_routes(b)  # type: ignore[method-assign]
    hold = cm.csvs["csv-1"].hold("snapshot", coord)
    cm.env.run(until=10.0)
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == len(others)  # one batch: a route per node
    load = net.link_load()
    assert load[f"fabric:{coord}"] == pytest.approx(total, rel=1e-12)
    assert load[f"cluster:{coord}"] == pytest.approx(total - per_node[coord], rel=1e-12)
    for n in others:
        assert load[f"fabric:{n}"] == 0.0
        assert load[f"cluster:{n}"] == pytest.approx(per_node[n], rel=1e-12)
    assert all(g.redirected == (g.node != coord) for g in io.groups if g.members)

    cm.csvs["csv-1"].release(hold)
    cm.env.run(until=15.0)
    assert len(calls) == 2 and sorted(calls[1]) == sorted(calls[0])
    load = net.link_load()
    assert {n: load[f"fabric:{n}"] for n in cm.nodes} == pytest.approx(per_node, rel=1e-12)
    assert all(load[f"cluster:{n}"] == 0.0 for n in cm.nodes)
    assert not any(g.redirected for g in io.groups)
    assert not net._steady_off  # max-min kept every VM at its demand: no fall-back


def test_a_vms_mean_latency_is_the_time_weighted_mm1_latency_of_its_paths_across_a_redirection() -> None:
    # One VM on a node other than the coordinator: 5 s direct, 5 s redirected, 5 s direct again.
    # Its latency on each path is the array controller's M/M/1 response time plus each hop's,
    # R = S / (1 - rho) with rho read from the links' loads; its mean is the time-weighted mean of
    # the two (the array's load does not move with the redirection). The VMs' groups share path
    # classes: one per node while direct.
    cm = _cluster()
    net, io, sc = cm.net, cm.io, cm.sc
    coord = cm.csvs["csv-1"].coordinator
    vm = next(v for v, h in sorted(cm.host.items()) if h != coord)
    node = cm.host[vm]
    nw, arr = sc.cluster.networks, sc.storage.array

    def latency() -> float:
        load, cap = net.link_load(), dict(zip(net.link_names, net.capacity.tolist(), strict=True))
        rho = {k: min(load[k] / cap[k], sc.run.latency_rho_max) for k in load}
        bandwidth = max(rho["array:read"], rho["array:write"])
        ops = net.hist_ops_class[-1][io._ctrl_of_csv["csv-1"]]
        array = arr.service_time_ms / (1 - min(max(ops / (arr.iops / arr.controllers), bandwidth), sc.run.latency_rho_max))
        hops = ([("fabric", node)] if not cm.csvs["csv-1"].redirected
                else [("cluster", node), ("cluster", coord), ("fabric", coord)])
        return array + sum((nw.fabric_service_ms if kind == "fabric" else nw.smb_hop_service_ms)
                           / (1 - rho[f"{kind}:{n}"]) for kind, n in hops)

    cm.env.run(until=5.0)
    direct = latency()
    assert len({k for k, c in io._cls.items() if io._ccount[c] > 0}) == len({h for h in cm.host.values()})
    hold = cm.csvs["csv-1"].hold("snapshot", coord)
    cm.env.run(until=10.0)
    redirected = latency()
    cm.csvs["csv-1"].release(hold)
    cm.env.run(until=15.0)
    assert latency() == pytest.approx(direct, rel=1e-12)
    assert redirected > direct  # two SMB hops more
    io.finish()
    assert io.vm_mean_latency_ms(vm) == pytest.approx((10 * direct + 5 * redirected) / 15, rel=1e-9)
    # the CSV's mean over its VMs and time: every VM ran the 15 s, so the mean of their means
    means = [io.vm_mean_latency_ms(v) for v in cm.host]
    assert io.csv_mean_latency_ms("csv-1", "baseline") == pytest.approx(sum(means) / len(means), rel=1e-9)


def test_the_node_inventory_follows_each_move_without_changing_one_handed_out_before() -> None:
    # 3 nodes, 6 VMs of one disk each (spread by the seed): moving one VM takes one VM and one VHD
    # from its node to the other; vm_counts reads the same numbers
    cm = _cluster()
    before = cm.node_inventory()
    assert sum(v for v, _ in before.values()) == 6 and all(v == d for v, d in before.values())
    vm = sorted(cm.host)[0]
    src = cm.host[vm]
    dst = next(n for n in cm.nodes if n != src)
    cm.move_vm_ownership(vm, src, dst)
    after = cm.node_inventory()
    assert after[src] == (before[src][0] - 1, before[src][1] - 1)
    assert after[dst] == (before[dst][0] + 1, before[dst][1] + 1)
    assert before != after and sum(v for v, _ in before.values()) == 6  # (the earlier one as it was)
    cm._inventory = None  # a recount gives the same
    assert cm.node_inventory() == after
    assert cm.vm_counts() == {n: v for n, (v, _) in after.items()}


def test_a_csvs_groups_change_path_class_together_with_the_same_sums_bit_for_bit_as_one_at_a_time() -> None:
    # 9 nodes, 9 win and 9 web VMs spread over them on one CSV: 18 groups, 16 of them on the
    # nodes other than the coordinator. Redirected at 5 s and back at 10 s (two snapshots' holds),
    # they change path class together (_set_hops_many); with that turned off, one at a time. Every
    # sum of the I/O model is the same to the last bit, and so is each VM's mean latency.
    def run(together: bool):  # type: ignore[no-untyped-def]
        cm = _cluster(nodes=9, per_template=9)
        io = cm.io
        used = []
        many = io._set_hops_many
        io._set_hops_many = lambda m: used.append(len(m.gids)) or (together and many(m))  # type: ignore[method-assign]
        coord = cm.csvs["csv-1"].coordinator
        cm.env.run(until=5.0)
        hold = cm.csvs["csv-1"].hold("snapshot", coord)
        cm.env.run(until=10.0)
        cm.csvs["csv-1"].release(hold)
        cm.env.run(until=15.0)
        io.finish()
        ng = len(io.groups)
        state = (io.csv_lat, io.csv_time, *(a[:ng].tolist() for a in (io._gint, io._gmark, io._gtime, io._gcls)),
                 io._ccount.tolist(), {v: io.vm_mean_latency_ms(v) for v in sorted(cm.host)})
        return state, used, len(io.groups)

    one, used, groups = run(False)
    many, _, _ = run(True)
    assert groups == 18 and used == [16, 16]
    assert many == one
    assert many[0]["baseline"][0] > 0.0


class _KeepsNothing(dict):
    def __setitem__(self, key, value) -> None:  # type: ignore[no-untyped-def]
        pass


def _counting_plans(io) -> list[int]:  # type: ignore[no-untyped-def]
    """The sizes of the plans the I/O model makes from now on, one entry per plan."""
    planned: list[int] = []
    plan, fast = io._plan, io._plan_fast
    io._plan = lambda gids: planned.append(len(gids)) or plan(gids)

    def plan_fast(csv, change):  # type: ignore[no-untyped-def]
        made = fast(csv, change)
        if made is not None:
            planned.append(len(io._groups_of_csv[csv]))
        return made

    io._plan_fast = plan_fast
    return planned


def _io_state_at_the_end(cm, t: float) -> tuple:  # type: ignore[no-untyped-def]
    """Run to t, finish, and every sum of the I/O model, the link loads, each VM's mean latency
    and each group's redirected flag."""
    io = cm.io
    cm.env.run(until=t)
    io.finish()
    ng = len(io.groups)
    return (io.csv_lat, io.csv_time, io._gint[:ng].tolist(), io._gcls[:ng].tolist(), io._ccount.tolist(), cm.net.link_load(),
            {v: io.vm_mean_latency_ms(v) for v in sorted(cm.host)}, [g.redirected for g in io.groups])


def test_a_csvs_plan_of_moves_used_again_gives_the_same_state_bit_for_bit_as_planned_anew() -> None:
    # 9 nodes, 18 VMs on one CSV: five snapshots' holds (redirected and back), a VM moved to
    # another node between the second and the third (its groups change: the plans are made
    # again), and a second CSV hold overlapping the last. With the plans kept, 10 changes of
    # paths need 4 plans (2 before the move, 2 after); planned anew each time, the same state to
    # the last bit: every sum of the I/O model, the link loads and each VM's mean latency.
    def run(keep: bool):  # type: ignore[no-untyped-def]
        cm = _cluster(nodes=9, per_template=9)
        io, vol = cm.io, cm.csvs["csv-1"]
        if not keep:
            io._plans = _KeepsNothing()
        planned = _counting_plans(io)
        t = 5.0
        for i in range(5):
            cm.env.run(until=t)
            hold = vol.hold("snapshot", vol.coordinator)
            cm.env.run(until=t + 2.0)
            vol.release(hold)
            t += 5.0
            if i == 1:
                vm = next(v for v, h in sorted(cm.host.items()) if h != vol.coordinator)
                cm.move_vm_ownership(vm, cm.host[vm], next(n for n in cm.nodes if n not in (cm.host[vm],)))
        return _io_state_at_the_end(cm, t), len(planned)

    kept, plans_kept = run(True)
    anew, plans_anew = run(False)
    assert (plans_kept, plans_anew) == (4, 10)
    assert kept == anew
    assert not any(kept[-1])  # every group back on its direct path


class _AlwaysTrue(set):
    """An empty set of nodes without their fabric that is still true: every change of a CSV goes
    the long way (a plan made from scratch for every group), the reference below."""

    def __bool__(self) -> bool:
        return True


def test_a_coordinator_moved_while_not_redirected_makes_no_plan_and_leaves_the_same_state_bit_for_bit() -> None:
    # 3 nodes, 6 VMs on one CSV, ws2008r2's way: the coordinator moves to node-2, node-3, then back
    # to node-1 (3 moves, not redirected before or after), each followed by a snapshot's hold
    # (redirected and back: 2 plans a round, 6 in all). A move leaves every group on its node's own
    # path, so it needs no plan: 6 plans, against 9 when every change is planned from scratch; the
    # state is the same to the last bit (sums of the I/O model, link loads, each VM's latency).
    def run(reference: bool):  # type: ignore[no-untyped-def]
        cm = _cluster(nodes=3, per_template=3)
        io, vol = cm.io, cm.csvs["csv-1"]
        assert vol.coordinator == "node-1"
        if reference:
            io.no_fabric = _AlwaysTrue()
        planned = _counting_plans(io)
        t = 5.0
        for node in ("node-2", "node-3", "node-1"):
            cm.env.run(until=t)
            vol.move_coordinator(node)
            cm.env.run(until=t + 1.0)
            hold = vol.hold("snapshot", vol.coordinator)
            cm.env.run(until=t + 3.0)
            vol.release(hold)
            t += 5.0
        return _io_state_at_the_end(cm, t), len(planned)

    short, plans_short = run(False)
    ref, plans_ref = run(True)
    assert (plans_short, plans_ref) == (6, 9)
    assert short == ref


def test_a_plan_made_in_arrays_is_the_plan_made_group_by_group_and_leaves_the_same_state_bit_for_bit() -> None:
    # 9 nodes, 18 VMs on one CSV. The coordinator moves to node-2, node-5 and node-9 (ws2008r2's
    # way), each followed by a snapshot's hold (redirected and back: 2 plans a round); between the
    # first two rounds a VM leaves node-3 for node-4 (a group empties: the plans kept are dropped,
    # the CSV's groups and routes are as they were); in the last round the coordinator
    # moves to node-1 while redirected (node-1's groups go direct, node-9's through node-1: a
    # third plan that round). 7 plans, every one made in arrays (`_plan_fast`) and each the same
    # as `_plan` makes it group by group: the same groups, hops and flags, the same route moves in
    # the same order, the same path classes (where made). With `_plan_fast` off, the same state to
    # the last bit.
    def run(arrays: bool):  # type: ignore[no-untyped-def]
        cm = _cluster(nodes=9, per_template=9)
        io, vol = cm.io, cm.csvs["csv-1"]
        fast, compared = io._plan_fast, []
        if arrays:
            def plan_fast(csv, change):  # type: ignore[no-untyped-def]
                made = fast(csv, change)
                assert made is not None
                ref = io._plan(io._groups_of_csv[csv])
                assert [(t[0].gid, *t[1:]) for t in made[0]] == [(t[0].gid, *t[1:]) for t in ref[0]]
                assert made[1].moves == ref[1].moves and made[3] is ref[3] is True
                assert (made[2].gids, made[2].hops) == (ref[2].gids, ref[2].hops)
                ks = [io._cls.get((h, io.groups[x].controller)) for x, h in zip(ref[2].gids, ref[2].hops, strict=True)]
                assert made[2].ks is None if None in ks else made[2].ks.tolist() == ks
                compared.append((change, len(made[0]), len(made[1].moves), made[2].ks is not None))
                return made
        else:
            def plan_fast(csv, change):  # type: ignore[no-untyped-def]
                return None
        io._plan_fast = plan_fast
        t = 5.0
        for i, node in enumerate(("node-2", "node-5", "node-9")):
            cm.env.run(until=t)
            vol.move_coordinator(node)
            cm.env.run(until=t + 1.0)
            hold = vol.hold("snapshot", vol.coordinator)
            cm.env.run(until=t + 3.0)
            if i == 2:
                vol.move_coordinator("node-1")
                cm.env.run(until=t + 3.5)
            vol.release(hold)
            t += 5.0
            if i == 0:
                vm = next(v for v, h in sorted(cm.host.items()) if h == "node-3")
                cm.move_vm_ownership(vm, "node-3", "node-4")
        return _io_state_at_the_end(cm, t), compared

    (arrays, compared), (ref, _) = run(True), run(False)
    # 18 VMs spread, a win and a web VM a node (2 groups), 16 groups on 8 routes off the coordinator.
    # The VM from node-3 joins its template's group on node-4: 17 groups with VMs, 15 of them off
    # the coordinator. Moved to node-1 while redirected, all 17 groups and 9 routes move (node-9's
    # onto node-1, node-1's to their own fabric, the others through node-1). The path classes come
    # with the plan where each is made already: back to the direct paths (made when the VMs started),
    # not through a coordinator the CSV never had (made group by group as they move).
    assert [(c[1], n, m, k) for c, n, m, k in compared] == [
        (("node-2", True), 16, 8, False), (("node-2", False), 16, 8, True),
        (("node-5", True), 15, 8, False), (("node-5", False), 15, 8, True),
        (("node-9", True), 15, 8, False), (("node-1", True), 17, 9, False), (("node-1", False), 15, 8, True)]
    assert arrays == ref


def test_a_latency_keeps_its_histogram_bin_until_it_crosses_an_edge_and_every_bin_is_searchsorteds() -> None:
    # The latency histogram's bins are 1 % wide (100 a decade from 0.001 ms): edge 300 is 1 ms, edge
    # 301 is 10 ** 0.01 = 1.0233 ms. A latency of exactly 1 ms is in bin 299 (a bin holds its upper
    # edge); the next float above 1 ms and 1.02 ms are in bin 300; 1.03 ms is in bin 301. A class
    # whose latency stays inside its bin is not searched again (its searchsorted index stays).
    import numpy as np

    from cluster_sim.cluster.io import _BINS

    cm = _cluster(nodes=3, per_template=3)
    cm.env.run(until=1.0)
    io = cm.io
    n = len(io._act)
    assert n == 3  # one class a node in use (no redirection): each node's fabric, one controller
    assert (_BINS[300], round(_BINS[301], 4)) == (1.0, 1.0233)
    for ms, b in ((1.0, 299), (float(np.nextafter(1.0, 2.0)), 300), (1.02, 300), (1.03, 301)):
        io._act_lat = np.full(n, ms)
        before = io._cj[io._act].copy()
        assert io._bins_now().tolist() == [b] * n
        searched = (io._cj[io._act] != before).any()
        assert searched == (ms in (1.0, float(np.nextafter(1.0, 2.0)), 1.03))  # 1.02: still bin 300
    io._act_lat = np.array([0.0005, 2e6, 0.5])  # below the first edge, above the last, in between
    assert io._bins_now().tolist() == [0, 899, int(_BINS.searchsorted(0.5)) - 1] == [0, 899, 269]


def test_every_histogram_bin_kept_across_rate_changes_is_the_bin_searchsorted_gives(monkeypatch) -> None:
    # Redirections (a coordinator moved while a snapshot's hold redirects its CSV) change which
    # classes are in use and every latency; at each rate change the bins kept or searched again
    # equal searchsorted over all latencies, and both ways occur. (numpy's `_bins_now`: the compiled
    # loops do the same, tests/test_latency_kernel.py)
    import numpy as np

    from cluster_sim.cluster.io import _BINS
    from cluster_sim.kernel.compiled import NUMPY_ENV

    monkeypatch.setenv(NUMPY_ENV, "1")
    cm = _cluster(nodes=9, per_template=9)
    io, vol = cm.io, cm.csvs["csv-1"]
    kept_all, searched, made = [0], [0], io._bins_now

    def checked() -> np.ndarray:
        before = io._cj[io._act].copy()
        bins = made()
        ref = np.clip(_BINS.searchsorted(io._act_lat) - 1, 0, len(_BINS) - 2)
        assert bins.tolist() == ref.tolist()
        same = (io._cj[io._act] == before).all()
        kept_all[0] += bool(same)
        searched[0] += not same
        return bins

    io._bins_now = checked
    t = 2.0
    for node in ("node-2", "node-5", "node-1"):
        cm.env.run(until=t)
        vol.move_coordinator(node)
        hold = vol.hold("snapshot", vol.coordinator)
        cm.env.run(until=t + 2.0)
        vol.release(hold)
        t += 4.0
    cm.env.run(until=t)
    assert kept_all[0] > 0 and searched[0] > 0
