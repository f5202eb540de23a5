"""Steady VM I/O on the fluid network, and the I/O latency each VM feels.

Each VM's workload is a steady demand (its read and write MiB/s) on its path: direct through
its node's storage fabric to the array, or, while its CSV is redirected and its node is not the
coordinator, over SMB through both nodes' cluster NICs and the coordinator's fabric [MS]. VMs
of one template on the same node and CSV share a path and a demand, so one weighted flow
stands for all of them (exact under max-min fairness; see kernel/fluid/). Those flows are steady
flows (a fixed load while max-min gives them their demand; kernel/fluid/steady.py) on the route of
their node and CSV, so a redirection moves one route per node.

Latency is per VM, from its own path: each resource on it is an M/M/1 queue, whose mean
response time is R = S / (1 - rho) (Kleinrock, *Queueing Systems* vol. 1, 1975, eq. 3.26), S the
unloaded service time and rho the utilisation, capped at `run.latency_rho_max` so a saturated
link gives a large finite latency. A VM's I/O latency is its LUN's array controller's R plus
each network hop's R (its node's fabric, or the SMB hops and the coordinator's fabric while
redirected). A controller's utilisation is the highest of the array's read and write bandwidth
utilisations and its own back-end IOPS utilisation (the array's IOPS shared evenly between
controllers [P]). Back-end IOPS count copy-on-write [V]: a write to a block not yet copied since
a snapshot costs 3 back-end I/Os, so with read fraction r and a share f of writes hitting such
blocks a host I/O costs r + (1-r)(1+2f). f is per snapshot and decays with the snapshot's age
as blocks get copied (cluster/writes.py: f(t) = exp(-w t / H), H the data the VM's writes fall
on); an array with a COW area per snapshot copies a block once per live snapshot that lacks
it (the sum of f over live snapshots), the others once (the newest snapshot decides). Before
2016 a vendor's change-tracking filter adds `change_tracking_write_overhead` to every write.
Reported percentiles are over VMs and time (each VM's latency, weighted by duration); per CSV
the mean latency of its VMs in each phase.

Groups with the same hops and array controller feel the same latency: the bookkeeping of each
rate change is done per such path class in use (at 8,000 VMs about 1,000 classes for 6,400 groups),
and a group's own sums (its latency x time, its CSV's) are brought up to date from its class's
running integral only when the group changes (members, path, controller) or the phase does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from cluster_sim.cluster.csv import CsvTable
from cluster_sim.cluster.topology import ARRAY_READ, ARRAY_WRITE, cluster_nic, fabric
from cluster_sim.cluster.writes import cow_decay_s, cow_share
from cluster_sim.kernel.compiled import compiled
from cluster_sim.kernel.fluid import Flow, FluidNetwork
from cluster_sim.kernel.fluid.steady import RouteMoves, SteadyOps
from cluster_sim.scenario import Scenario
from cluster_sim.scenario.placement import VmSpec

if TYPE_CHECKING:
    from cluster_sim.cluster.storage import StorageArray

_BINS = np.logspace(-3, 6, 901)  # latency histogram edges in ms: 0.001 ms .. 1000 s
# searchsorted(_BINS, x) is the j with _BELOW[j] < x <= _ABOVE[j] (the edges with -inf and +inf
# around them: the edge below and the edge above each j)
_BELOW = np.concatenate(([-np.inf], _BINS))
_ABOVE = np.concatenate((_BINS, [np.inf]))


def latency_kernel() -> Any:
    """The compiled latency bookkeeping (cluster/_latency.pyx), or None: numpy's expressions
    (kernel/compiled.py). The same results either way, to the bit."""
    return compiled("cluster_sim.cluster._latency")


PHASES = ("baseline", "backup", "after")
_PLANS_PER_CSV = 4  # plans kept per CSV (a snapshot's redirection and back take 2) [P]
_MANY = 8  # groups moving together that are set in numpy (fewer: one at a time is as quick) [P]


@dataclass
class Group:
    gid: int
    node: str
    csv: str
    template: str
    read_mib_s: float  # per VM
    write_mib_s: float
    read_ops_per_mib: float
    write_ops_per_mib: float
    controller: int
    cow_decay_s: float  # the template's copy-on-write time constant (cluster/writes.py)
    members: set[str] = field(default_factory=set)
    read_flow: Flow | None = None
    write_flow: Flow | None = None
    redirected: bool = False
    stalled: bool = False  # its path is cut (README "Fault events"): no I/O flows until it is whole


@dataclass
class _Writers:
    """A CSV's groups' write flows, re-priced together (copy-on-write): each flow's host I/Os per
    MiB, its time constant (an index into `reps`, a group of each), and the kernel's handle."""

    flows: list[Flow]
    ops_per_mib: np.ndarray
    which: np.ndarray
    reps: list[Group]
    batch: SteadyOps | None


class _Moved:
    """The groups that move with their routes in a plan (IoModel._plan), their hops, whether each
    is redirected after, and once known their path classes."""

    __slots__ = ("groups", "gids", "hops", "reds", "idx", "ks")

    def __init__(self, groups: list[Group], hops: list[tuple[int, ...]], reds: list[bool],
                 idx: np.ndarray | None = None):
        self.groups = groups
        self.gids = [g.gid for g in groups] if idx is None else idx.tolist()  # (idx: their ids, given)
        self.hops = hops
        self.reds = reds
        many = len(groups) >= _MANY  # (fewer go one at a time)
        self.idx = (np.array(self.gids, dtype=np.intp) if idx is None else idx) if many else None
        self.ks: np.ndarray | None = None


class _Layout:
    """A CSV's groups as `_plan_fast` reads them (in the order of `_groups_of_csv`): their ids, the
    groups, their nodes' indices and their routes (-1: none yet). Kept until the CSV gains a group
    or a route, or its LUN changes controller; a group's VMs coming or going leave it as it is."""

    __slots__ = ("gids", "groups", "node", "route")

    def __init__(self, gids: np.ndarray, groups: list[Group], node: np.ndarray, route: np.ndarray):
        self.gids = gids
        self.groups = groups
        self.node = node
        self.route = route


class IoModel:
    def __init__(self, sc: Scenario, net: FluidNetwork, csvs: CsvTable, vms: list[VmSpec],
                 array: StorageArray | None = None):
        self.sc = sc
        self.net = net
        self.csvs = csvs
        self.array = array
        self.spec = {v.name: v for v in vms}
        self.vm_group: dict[str, int] = {}
        self.groups: list[Group] = []
        self._gkey: dict[tuple[str, str, str], int] = {}
        self._groups_of_csv: dict[str, list[int]] = {c: [] for c in csvs.volumes}
        arr = sc.storage.array
        self._csv_names = list(csvs.volumes)
        self._csv_index = {c: i for i, c in enumerate(self._csv_names)}
        self._controllers = arr.controllers
        self._ctrl_of_csv = {c: i % arr.controllers for i, c in enumerate(self._csv_names)}  # as the array
        self._cap = net.capacity
        self._iops_per_controller = arr.iops / arr.controllers
        self._s_array = arr.service_time_ms
        self._rho_max = sc.run.latency_rho_max
        self._series_step = sc.run.latency_series_step_s
        self._block_mib = sc.storage.block_size_mib
        self._read_i = net.link(ARRAY_READ)
        self._write_i = net.link(ARRAY_WRITE)
        self._paths: dict = {}  # node, or (node, coordinator): link indices of the path
        self._routes: dict[tuple[str, str], int] = {}  # (node, CSV): the fluid route of its VMs' I/O
        self._writers: dict[str, _Writers] = {}  # per CSV, its groups' write flows (until one is rebuilt)
        # per CSV: its groups' rebuilds so far, the state (coordinator, redirected) its groups'
        # paths were last taken in, and its plans per change of state (state before, state after)
        # made since its last rebuild and the last fault (_paths_changed)
        self._csv_ver: dict[str, int] = dict.fromkeys(csvs.volumes, 0)
        self._csv_state = {v.name: (v.coordinator, v.redirected) for v in csvs}  # (as each change leaves it)
        self._plans: dict[str, tuple[tuple[int, int], dict]] = {}
        self._fault_ver = 0  # faults that changed which links exist (paths_changed)
        self._layouts: dict[str, _Layout] = {}  # per CSV, for _plan_fast
        self._node_idx: dict[str, int] = {}  # a node's index in _node_names (groups' nodes, as met)
        self._node_names: list[str] = []
        self._direct_by_node: list[tuple[int, ...]] = []  # per node index: its direct path
        self._smb_by_coord: dict[str, list[tuple[int, ...]]] = {}  # per coordinator: each node's path through it
        self._cls_rows: dict[tuple[str | None, int], np.ndarray] = {}  # _class_row
        self.write_overhead = 0.0  # change-tracking filter on the hosts (set before the cluster starts)
        # fault events (cluster/faults.py): nodes without their storage fabric, and whether two nodes
        # reach each other over the cluster network (None: always)
        self.no_fabric: set[str] = set()
        self.reachable: Callable[[str, str], bool] | None = None
        self._protected: set[str] = set()  # LUNs with live snapshots
        self._cow_ticking = False
        nw = sc.cluster.networks
        self._hop_service = np.array(
            [nw.smb_hop_service_ms if n.startswith("cluster:") else nw.fabric_service_ms for n in net.link_names]
        )
        self._hop_r = np.zeros(len(net.link_names) + 1)  # (_latencies' scratch)
        # path classes (hops, controller): hop link indices padded with -1, controller, the VMs
        # doing I/O on it, its latency at the last rate change it was in use, and its latency x time
        # while in use (ms*s) (arrays grown by doubling; the first _ncls rows are classes). Only the
        # classes with VMs at the last rate change (_act) are priced and integrated: a ws2008r2 run
        # of 8,000 VMs on 64 nodes and 16 array controllers makes 65,552 classes, about 1,000 in use
        # at once; a group's sums take differences of its class's integral while it is in the class.
        self._cls: dict[tuple[tuple[int, ...], int], int] = {}
        self._ncls = 0
        self._chops = np.full((3, 16), -1, dtype=int)  # (per hop position a row: gathers of contiguous rows)
        self._cctrl = np.zeros(16, dtype=int)
        self._ccount = np.zeros(16)
        self._clat = np.zeros(16)
        self._cint = np.zeros(16)
        self._cj = np.zeros(16, dtype=np.int64)  # searchsorted(_BINS, latency) when last binned
        self._act = np.zeros(0, dtype=int)  # the classes with VMs at the last rate change
        self._act_path: tuple[np.ndarray, ...] = (np.zeros(0, dtype=int),) * 4  # their controllers, hops
        self._act_lat = np.zeros(0)  # their latencies then
        self._binned = False  # _act_b holds those latencies' histogram bins (False: not yet checked)
        self._act_b = np.zeros(0, dtype=np.int64)  # their bins when last binned (_cj), and the
        self._act_lo = np.zeros(0)  # edges below and above their latencies then
        self._act_hi = np.zeros(0)
        self._act_stale = True  # a class's VM count changed since _act was taken
        # per group: its class, CSV index, VMs doing I/O; its latency x time, and its class's
        # integral and the time when that was last brought up to date (_bring) (arrays grown by
        # doubling, the first len(groups) rows are groups: a CSV's groups moving with their routes
        # change class in a few array operations, _set_hops_many)
        self._gcls = np.zeros(16, dtype=np.int64)
        self._gcsv = np.zeros(16, dtype=np.int64)
        self._counts = np.zeros(16, dtype=np.int64)
        self._gint = np.zeros(16)
        self._gmark = np.zeros(16)
        self._gtime = np.zeros(16)
        self._running = 0  # VMs doing I/O (the sum of _counts)
        self._vm_base: dict[str, float] = {}
        self._vm_acc: dict[str, float] = {}
        self._vm_time: dict[str, float] = {}
        self._vm_since: dict[str, float] = {}
        self.phase = "baseline"
        self.hist = {p: np.zeros(len(_BINS) - 1) for p in PHASES}
        # per CSV and phase: sum of latency x VM-seconds, and VM-seconds
        self.csv_lat = {p: [0.0] * len(self._csv_names) for p in PHASES}
        self.csv_time = {p: [0.0] * len(self._csv_names) for p in PHASES}
        self.baseline_snapshot: tuple[np.ndarray, np.ndarray] | None = None
        # the bookkeeping compiled (cluster/_latency.pyx), or None: numpy's; given the arrays it works
        # on, and again where they are new ones
        module = self._latency_module = latency_kernel()
        self._kernel: Any = None
        if module is not None:
            self._kernel = module.LatencyKernel(
                self._cap, self._hop_service, self._hop_r, np.zeros(net.ops_classes), self._rho_max,
                self._iops_per_controller, self._s_array, self._read_i, self._write_i, _BINS, _BIN_OF, _BELOW, _ABOVE,
                np.zeros(len(_BINS) - 1))
            self._kernel.classes(self._cint, self._clat, self._ccount, self._cj)
            self._kernel.in_use(self._act, *self._act_path, self._act_b, self._act_lo, self._act_hi)
            self._kernel.phase(self.hist[self.phase])
        self.series_t: list[float] = []
        self.series_p50: list[float] = []
        self.series_p99: list[float] = []
        self._last_t = net.env.now
        csvs.listeners.append(self._csv_changed)
        net.listeners.append(self._on_rates)

    # -- membership ------------------------------------------------------------------------------
    def _group_for(self, vm: VmSpec, node: str) -> Group:
        key = (node, vm.csv, vm.template)
        gid = self._gkey.get(key)
        if gid is None:
            # host I/Os per MiB carried: iops / (MiB/s) = 1024 / io_size_kib
            w_ops = vm.write_iops / vm.write_mib_s if vm.write_mib_s > 0 else 0.0
            r_ops = vm.read_iops / vm.read_mib_s if vm.read_mib_s > 0 else 0.0
            gid = len(self.groups)
            ctrl = self._ctrl_of_csv[vm.csv]
            self.groups.append(Group(gid, node, vm.csv, vm.template, vm.read_mib_s, vm.write_mib_s, r_ops, w_ops,
                                     ctrl, cow_decay_s(vm)))
            self._gkey[key] = gid
            self._groups_of_csv[vm.csv].append(gid)
            self._layouts.pop(vm.csv, None)
            k = self._class_of((), ctrl)  # (no hops until its path is set)
            if gid == len(self._gcls):  # full: twice the room
                self._gcls, self._gcsv, self._counts, self._gint, self._gmark, self._gtime = _twice_the_room(
                    self._gcls, self._gcsv, self._counts, self._gint, self._gmark, self._gtime)
            self._gcls[gid] = k
            self._gcsv[gid] = self._csv_index[vm.csv]
            self._gmark[gid] = self._cint.item(k)
            self._gtime[gid] = self.net.env.now
        return self.groups[gid]

    def _class_of(self, hops: tuple[int, ...], ctrl: int) -> int:
        k = self._cls.get((hops, ctrl))
        if k is None:
            k = self._cls[(hops, ctrl)] = self._ncls
            self._ncls += 1
            if k == len(self._cctrl):  # full: twice the room
                self._chops = np.hstack([self._chops, np.full_like(self._chops, -1)])
                self._cctrl, self._ccount, self._clat, self._cint, self._cj = _twice_the_room(
                    self._cctrl, self._ccount, self._clat, self._cint, self._cj)
                if self._kernel is not None:
                    self._kernel.classes(self._cint, self._clat, self._ccount, self._cj)
            self._chops[: len(hops), k] = hops
            self._cctrl[k] = ctrl
        return k

    def _add_to_class(self, k: int, n: int) -> None:
        """n VMs more (or fewer) doing I/O on class k; a class without VMs now, or with VMs again,
        changes the classes in use (_act, taken again at the next rate change)."""
        was = self._ccount[k]
        self._ccount[k] = was + n
        if was == 0 or was + n == 0:
            self._act_stale = True

    def _bring(self, gid: int) -> None:
        """Bring the group's sums up to now (after _settle): its latency x time, and its CSV's in
        this phase, from its class's integral since they were last brought up to date."""
        c = self._cint.item(self._gcls.item(gid))
        d = c - self._gmark.item(gid)
        now = self.net.env.now
        t0 = self._gtime.item(gid)
        if d or now != t0:
            self._gint[gid] += d
            n = self._counts.item(gid)
            if n:
                ci = self._gcsv.item(gid)
                self.csv_lat[self.phase][ci] += n * d
                self.csv_time[self.phase][ci] += n * (now - t0)
            self._gmark[gid] = c
            self._gtime[gid] = now

    def _bring_all(self) -> None:
        for gid in range(len(self.groups)):
            self._bring(gid)

    def _group_integral(self, gid: int) -> float:
        self._bring(gid)
        return self._gint.item(gid)

    def start_vm(self, vm: str, node: str) -> None:
        spec = self.spec[vm]
        if not spec.running or vm in self.vm_group:
            return
        self._settle()
        g = self._group_for(spec, node)
        g.members.add(vm)
        self.vm_group[vm] = g.gid
        self._vm_base[vm] = self._group_integral(g.gid)
        self._vm_since[vm] = self.net.env.now
        self._refresh(g)

    def stop_vm(self, vm: str) -> None:
        gid = self.vm_group.pop(vm, None)
        if gid is None:
            return
        self._settle()
        g = self.groups[gid]
        g.members.discard(vm)
        self._vm_acc[vm] = self._vm_acc.get(vm, 0.0) + self._group_integral(gid) - self._vm_base.pop(vm)
        self._vm_time[vm] = self._vm_time.get(vm, 0.0) + self.net.env.now - self._vm_since.pop(vm)
        self._refresh(g)

    def move_vm(self, vm: str, node: str) -> None:
        self.stop_vm(vm)
        self.start_vm(vm, node)

    # -- paths -----------------------------------------------------------------------------------
    def _path(self, g: Group) -> tuple[tuple[int, ...], bool, bool]:
        """(link indices, redirected, stalled). Over SMB through the coordinator while the CSV is
        redirected, or while the group's node has lost its storage fabric [MS]; stalled when that
        path is cut (the coordinator is across a partition, or has no fabric either)."""
        vol = self.csvs[g.csv]
        coord = vol.coordinator
        lost = g.node in self.no_fabric
        if coord != g.node and (vol.redirected or lost):
            stalled = coord in self.no_fabric or (self.reachable is not None and not self.reachable(g.node, coord))
            return self._smb_path(g.node, coord), True, stalled
        return self._direct_path(g.node), False, lost

    def _direct_path(self, node: str) -> tuple[int, ...]:
        p = self._paths.get(node)
        if p is None:
            p = self._paths[node] = (self.net.link(fabric(node)),)
        return p

    def _smb_path(self, node: str, coord: str) -> tuple[int, ...]:
        key = (node, coord)
        p = self._paths.get(key)
        if p is None:
            p = self._paths[key] = tuple(self.net.link(x) for x in (cluster_nic(node), cluster_nic(coord), fabric(coord)))
        return p

    def _set_hops(self, gid: int, hops: tuple[int, ...]) -> None:
        """The group's path (and controller) class: its VMs' latency from now on (settled before)."""
        ctrl = self.groups[gid].controller
        k = self._cls.get((hops, ctrl))  # (the known class without a call: this runs per group and redirection)
        if k is None:
            k = self._class_of(hops, ctrl)
        old = self._gcls.item(gid)
        if k != old:
            self._bring(gid)
            n = self._counts.item(gid)
            if n:
                self._add_to_class(old, -n)
                self._add_to_class(k, n)
            self._gcls[gid] = k
            self._gmark[gid] = self._cint.item(k)

    def _set_hops_many(self, m: _Moved) -> bool:
        """`_set_hops` for the groups of one CSV that moved with their routes (a CSV redirected or
        back, or its coordinator moved while redirected), compiled (`set_hops_many` of
        cluster/_latency.pyx) or in numpy: the groups that change class are brought up to date
        together, their CSV's sums taking each group's share one after the other
        (np.add.accumulate), as one call at a time would; a group that keeps its class is left as
        it is, as `_set_hops` leaves it. False, and nothing done, for fewer than _MANY groups,
        groups of several CSVs or a class not made yet (the caller goes one at a time)."""
        g = m.idx
        if g is None:  # fewer than _MANY
            return False
        gcls, gcsv = self._gcls, self._gcsv
        if m.ks is None:  # their classes (kept with the plan: a class, once made, stays)
            ks = [self._cls.get((h, self.groups[x].controller)) for x, h in zip(m.gids, m.hops, strict=True)]
            if None in ks or (gcsv[g] != gcsv[g[0]]).any():
                return False
            m.ks = np.array(ks, dtype=np.int64)
        k = m.ks
        ci = gcsv.item(g[0])
        lat, tim = self.csv_lat[self.phase], self.csv_time[self.phase]
        if self._kernel is not None:  # (the same, compiled)
            if self._latency_module.set_hops_many(g, k, gcls, self._counts, self._cint, self._gmark, self._gint,
                                                  self._gtime, self._ccount, lat, tim, ci, self.net.env.now):
                self._act_stale = True
            return True
        old = gcls[g]
        moving = old != k
        if not moving.all():  # (a coordinator that moved while redirected: some keep theirs)
            g, k, old = g[moving], k[moving], old[moving]
        gint, gtime = self._gint, self._gtime
        n = self._counts[g].astype(float)
        cint, now = self._cint, self.net.env.now
        d = cint[old] - self._gmark[g]  # _bring
        lat[ci] = np.add.accumulate(np.concatenate(([lat[ci]], n * d))).item(-1)
        tim[ci] = np.add.accumulate(np.concatenate(([tim[ci]], n * (now - gtime[g])))).item(-1)
        gint[g] += d
        gtime[g] = now
        gcls[g] = k
        self._gmark[g] = cint[k]
        if n.any():  # (the classes in use are taken again: their set may have changed)
            np.subtract.at(self._ccount, old, n)
            np.add.at(self._ccount, k, n)
            self._act_stale = True
        return True

    def _write_multiplier(self, g: Group, ages: list[float] | None = None) -> float:
        """Back-end I/Os per host write on this group's LUN now (copy-on-write, change tracking);
        `ages`: of the LUN's live snapshots, if the caller has them."""
        return self._multipliers(g.csv, [g], self._ages(g.csv) if ages is None else ages)[0]

    def _multipliers(self, csv: str, groups: list[Group], ages: list[float]) -> list[float]:
        """Back-end I/Os per host write of each of these groups of the CSV now, its live snapshots'
        `ages` given (copy-on-write, change tracking); what they share worked out once (the
        re-pricing's: 145,000 groups in a ws2012 run of 8000vm-64node)."""
        m = 1.0 + self.write_overhead
        if csv not in self._protected or self.array is None:
            return [m] * len(groups)
        arr = self.sc.storage.array
        if arr.snapshot_style == "row":
            return [m * (1.0 + arr.row_metadata_overhead)] * len(groups)
        if arr.cow_per_snapshot:
            return [m * (1.0 + 2.0 * sum(cow_share(g.cow_decay_s, a) for a in ages)) for g in groups]
        if not ages:  # (no live snapshot: no copy-on-write share)
            return [m] * len(groups)
        youngest = min(ages)
        return [m * (1.0 + 2.0 * cow_share(g.cow_decay_s, youngest)) for g in groups]

    def _ages(self, csv: str) -> list[float]:
        now = self.net.env.now
        return [now - t for t in self.array.live_snapshot_times(csv)] if self.array is not None else []

    def _route(self, g: Group, hops: tuple[int, ...]) -> int:
        """The route of the group's node and CSV (their VMs' hops), moved onto `hops`."""
        key = (g.node, g.csv)
        r = self._routes.get(key)
        if r is None:
            r = self._routes[key] = self.net.route_idx(hops)
            self._layouts.pop(g.csv, None)
        else:
            self.net.move_route_idx(r, hops)
        return r

    def _refresh(self, g: Group) -> None:
        """(Re)build a group's two flows for its current members and path."""
        for f in (g.read_flow, g.write_flow):
            if f is not None:
                self.net.stop(f)
        g.read_flow = g.write_flow = None
        self._writers.pop(g.csv, None)
        self._csv_ver[g.csv] += 1  # (a plan of its CSV no longer holds)
        n = len(g.members)
        had = self._counts.item(g.gid)
        if n != had:
            self._bring(g.gid)
            self._running += n - had
            self._add_to_class(self._gcls.item(g.gid), n - had)
            self._counts[g.gid] = n
        hops, g.redirected, g.stalled = self._path(g)
        self._set_hops(g.gid, hops)
        if n == 0 or g.stalled:
            return
        r = self._route(g, hops)
        if g.read_mib_s > 0:
            g.read_flow = self.net.start([ARRAY_READ], cap_mib_s=n * g.read_mib_s, weight=n,
                                         tag=("vm_io", g.gid, "read"), ops_per_mib=g.read_ops_per_mib,
                                         ops_class=g.controller, steady=True, route=r)
        if g.write_mib_s > 0:
            g.write_flow = self.net.start([ARRAY_WRITE], cap_mib_s=n * g.write_mib_s, weight=n,
                                          tag=("vm_io", g.gid, "write"),
                                          ops_per_mib=g.write_ops_per_mib * self._write_multiplier(g),
                                          ops_class=g.controller, steady=True, route=r)

    def _csv_changed(self, csv: str) -> None:
        vol = self.csvs[csv]
        change = (self._csv_state[csv], (vol.coordinator, vol.redirected))  # its state before, after
        self._csv_state[csv] = change[1]
        if self.no_fabric:  # (a coordinator moves before paths_changed is told of a lost fabric)
            self._paths_changed(self._groups_of_csv[csv])
            return
        if not change[0][1] and not change[1][1]:
            # its coordinator moved, not redirected before or after, every node with its fabric:
            # every group stays on its own node's path, the plan is empty (checked against _plan on
            # the whole suite and 8000vm-64node). ws2008r2 moves coordinators to the node backing
            # up: 1,327 of 4,333 changes at 3,200 VMs, each a pass over the CSV's groups before.
            self._settle()  # (as _paths_changed does first: the sums in the same steps)
            return
        # what else decides the groups that move and where: the CSV's groups (members, stalled,
        # as of their last rebuild) and the faults; plans of older counts never hold again
        since = (self._csv_ver[csv], self._fault_ver)
        kept = self._plans.get(csv)
        if kept is None or kept[0] != since:
            kept = self._plans[csv] = (since, {})
        self._paths_changed(self._groups_of_csv[csv], kept[1], change, csv)

    def _paths_changed(self, gids: list[int], plans: dict | None = None, change: tuple | None = None,
                       csv: str | None = None) -> None:
        """These groups take their paths again: a group cut off or whole again rebuilds its flows;
        one redirected or back, or whose coordinator moved while redirected, moves with its route
        (the VMs of its node and CSV: one move for all of them). A CSV's plan of which groups and
        routes move (`_plan`) is kept in `plans` per change of its state and used again while its
        groups and the faults are as they were: a CSV goes back and forth between the same two
        states once per snapshot."""
        self._settle()  # (a group that changes path class is brought up to date)
        plan = plans.get(change) if plans is not None else None
        if plan is None:
            plan = (csv is not None and self._plan_fast(csv, change)) or self._plan(gids)
            if plans is not None and plan[-1]:
                if len(plans) >= _PLANS_PER_CSV:  # (memory: ws2008r2 moves coordinators all over)
                    plans.clear()
                plans[change] = plan
        todo, moves, together_, _reusable = plan
        if moves is not None:
            self.net.move_routes(moves)
        if together_ is not None:  # no rebuild: every group moved with its route
            if not self._set_hops_many(together_):  # (their classes set together, if they can be)
                for g, hops, _r, _b in todo:
                    self._set_hops(g.gid, hops)
            deque(map(setattr, together_.groups, repeat("redirected"), together_.reds), maxlen=0)
            moved = any(map(_flowing, together_.groups))
        else:
            moved = False
            for g, hops, redirected, rebuild in todo:  # each group, in order (a rebuild takes new slots)
                if rebuild:
                    self._refresh(g)
                    continue
                self._set_hops(g.gid, hops)  # moved with its route
                g.redirected = redirected
                moved = moved or _flowing(g)
        if moved:
            self.net.touch()  # rates are recomputed as for any move, even to the same links

    def _plan(self, gids: list[int]) -> tuple[list, RouteMoves | None, _Moved | None, bool]:
        """Which of these groups move, and how: (group, hops, redirected, rebuild) per group in
        order, the (route, hops) moves once per route in order (made ready for the kernel, None if
        none), the moved groups and their hops (None if a group rebuilds), and whether the plan
        holds again for the same key (no rebuild, no route made)."""
        now: dict[tuple[str, str], tuple[tuple[int, ...], bool, bool]] = {}
        todo: list[tuple[Group, tuple[int, ...], bool, bool]] = []
        moves: list[tuple[int, tuple[int, ...]]] = []
        queued: set[int] = set()
        reusable = True
        for gid in gids:  # first the routes of the groups that move
            g = self.groups[gid]
            if not g.members:
                continue
            key = (g.node, g.csv)
            got = now.get(key)
            if got is None:
                got = now[key] = self._path(g)
            hops, redirected, stalled = got
            if stalled != g.stalled:
                todo.append((g, hops, redirected, True))  # cut off (its flows stop) or whole again
                reusable = False
            elif not stalled and (redirected != g.redirected or g.redirected):
                # redirected or back, or the coordinator moved while redirected
                r = self._routes.get(key)
                if r is None:
                    self._route(g, hops)
                    reusable = False
                elif r not in queued:
                    queued.add(r)
                    moves.append((r, hops))
                todo.append((g, hops, redirected, False))
        batch = self.net.route_moves(moves) if moves else None
        if any(t[3] for t in todo):  # (a rebuild: the groups one at a time)
            return todo, batch, None, False
        return todo, batch, _Moved([t[0] for t in todo], [t[1] for t in todo], [t[2] for t in todo]), reusable

    def _plan_fast(self, csv: str, change: tuple) -> tuple[list, RouteMoves | None, _Moved, bool] | None:
        """`_plan` of a CSV's change of state in array operations, the same plan; None (then `_plan`)
        after a fault that changed which links exist (paths may be cut or through another node), or
        when a group that moves has no route yet.

        Without such faults a group's path is its node's own, or, while its CSV is redirected and
        its node is not the coordinator, through the coordinator; no group is cut off, so none is
        rebuilt; a group with VMs moves if it is redirected after the change or was before (its
        path class has a second hop: `_path` gave it a path through a coordinator)."""
        if self._fault_ver:
            return None
        lay = self._layouts.get(csv)
        if lay is None:
            lay = self._layouts[csv] = self._layout(csv)
        coord, redirected = change[1]
        gids = lay.gids
        after = lay.node != self._node_idx.get(coord, -1) if redirected else np.zeros(len(gids), dtype=bool)
        before = self._chops[1][self._gcls[gids]] >= 0
        go = ((self._counts[gids] > 0) & (after | before)).nonzero()[0]
        routes = lay.route[go]
        if (routes < 0).any():
            return None  # (`_plan` makes the route)
        red = after[go].tolist()
        at = lay.node[go]
        direct = self._direct_by_node
        smb = self._smb_row(coord) if redirected else direct
        hops = [smb[n] if r else direct[n] for n, r in zip(at.tolist(), red, strict=True)]
        groups = list(map(lay.groups.__getitem__, go.tolist()))
        todo = list(zip(groups, hops, red, repeat(False)))
        moves = list(dict(zip(routes.tolist(), hops, strict=True)).items())  # (once per route, where it first comes)
        moved = _Moved(groups, hops, red, gids[go])
        if moved.idx is not None:  # their path classes, where every one is made already
            ctrl = self._ctrl_of_csv[csv]
            for again in (False, True):  # (again: with the classes made since the rows were)
                ks = self._class_row(None, ctrl, again)[at]
                if redirected:
                    ks = np.where(after[go], self._class_row(coord, ctrl, again)[at], ks)
                if (ks >= 0).all():
                    moved.ks = ks
                    break
        return todo, self.net.route_moves(moves) if moves else None, moved, True

    def _layout(self, csv: str) -> _Layout:
        gids = self._groups_of_csv[csv]
        groups = [self.groups[i] for i in gids]
        for g in groups:
            if g.node not in self._node_idx:
                self._node_idx[g.node] = len(self._node_names)
                self._node_names.append(g.node)
                self._direct_by_node.append(self._direct_path(g.node))
                self._smb_by_coord.clear()  # (a node more in each row)
                self._cls_rows.clear()
        routes = [self._routes.get((g.node, csv), -1) for g in groups]
        return _Layout(np.array(gids, dtype=np.intp), groups,
                       np.array([self._node_idx[g.node] for g in groups], dtype=np.intp), np.array(routes, dtype=np.int64))

    def _class_row(self, coord: str | None, ctrl: int, anew: bool = False) -> np.ndarray:
        """Each known node's path class (-1: not made when the row was) on its own path (coord
        None) or through `coord`, with controller `ctrl`; made again if `anew`."""
        key = (coord, ctrl)
        row = self._cls_rows.get(key)
        if row is None or anew:
            paths = self._direct_by_node if coord is None else self._smb_row(coord)
            row = self._cls_rows[key] = np.array([self._cls.get((h, ctrl), -1) for h in paths], dtype=np.int64)
        return row

    def _smb_row(self, coord: str) -> list[tuple[int, ...]]:
        """Each known node's path to its LUNs through `coord` (by node index)."""
        row = self._smb_by_coord.get(coord)
        if row is None:
            row = self._smb_by_coord[coord] = [self._smb_path(n, coord) for n in self._node_names]
        return row

    def paths_changed(self) -> None:
        """A fault changed which links exist (a partition, a lost or restored storage fabric):
        every group takes its path again."""
        self._fault_ver += 1
        for vol in self.csvs:
            self._csv_state[vol.name] = (vol.coordinator, vol.redirected)
        self._paths_changed(list(range(len(self.groups))))

    def controller_moved(self, csv: str) -> None:
        """The CSV's LUN now belongs to another array controller (a controller failed or came
        back): its groups' I/O counts on that controller from now on."""
        if self.array is None:
            return
        self._settle()
        ctrl = self.array.luns[csv].controller
        self._ctrl_of_csv[csv] = ctrl
        self._layouts.pop(csv, None)
        for gid in self._groups_of_csv[csv]:
            g = self.groups[gid]
            g.controller = ctrl
            if g.members:
                self._refresh(g)  # (an empty group takes its new class when a VM joins it)

    def protection_changed(self, csv: str) -> None:
        """The live snapshots on a LUN changed: re-price its groups' writes (copy-on-write)."""
        if self.array is None:
            return
        if self.array.luns[csv].existing:
            self._protected.add(csv)
        else:
            self._protected.discard(csv)
        self._reprice(csv)
        if self._protected and not self._cow_ticking:
            self._cow_ticking = True
            self.net.env.process(self._cow_ticker())

    def _reprice(self, csv: str) -> None:
        ages = self._ages(csv)
        w = self._writers.get(csv)
        if w is None:
            w = self._writers[csv] = self._writer_set(csv)
        if not w.flows:
            return
        mult = np.array(self._multipliers(csv, w.reps, ages))
        ops = w.ops_per_mib * mult[w.which]
        if w.batch is None or not self.net.set_steady_ops(w.batch, ops):
            self.net.set_ops_many(w.flows, ops.tolist())  # (a flow ended or changed: one by one)
            w.batch = self.net.steady_ops(w.flows)

    def _writer_set(self, csv: str) -> _Writers:
        flows, ops, which, reps = [], [], [], []
        decays: dict[float, int] = {}  # by time constant (the groups of a template share it)
        for g in (self.groups[i] for i in self._groups_of_csv[csv]):
            if g.write_flow is None:
                continue
            flows.append(g.write_flow)
            ops.append(g.write_ops_per_mib)
            if g.cow_decay_s not in decays:
                decays[g.cow_decay_s] = len(reps)
                reps.append(g)
            which.append(decays[g.cow_decay_s])
        return _Writers(flows, np.array(ops, dtype=float), np.array(which, dtype=int), reps,
                        self.net.steady_ops(flows))

    def _cow_ticker(self):  # type: ignore[no-untyped-def]
        """While snapshots exist, the copy-on-write share decays: re-price every
        `cow_update_interval_s` (the fluid model holds rates constant between changes)."""
        step = self.sc.storage.array.cow_update_interval_s
        while self._protected:
            yield self.net.env.timeout(step)
            for csv in sorted(self._protected):
                self._reprice(csv)
        self._cow_ticking = False

    # -- latency ---------------------------------------------------------------------------------
    def _latencies(self, paths: tuple[np.ndarray, ...]) -> np.ndarray:
        """The latency of each of these classes now (their controllers and hops: _act_path)."""
        array_term, hop_r = self._terms()
        ctrl, h0, h1, h2 = paths
        return array_term[ctrl] + ((hop_r[h0] + hop_r[h1]) + hop_r[h2])

    def _terms(self) -> tuple[np.ndarray, np.ndarray]:
        """A latency's terms now: the array's per controller, and a hop's per link (0 at index -1:
        no hop)."""
        net = self.net
        load = net.hist_load[-1]
        rho = np.minimum(load / self._cap, self._rho_max)
        bandwidth = max(rho[self._read_i], rho[self._write_i])
        rho_ctrl = np.minimum(np.maximum(net.hist_ops_class[-1] / self._iops_per_controller, bandwidth),
                              self._rho_max)
        array_term = self._s_array / (1.0 - rho_ctrl)  # per controller
        hop_r = self._hop_r  # per link, and 0 at index -1 (no hop)
        np.divide(self._hop_service, 1.0 - rho, out=hop_r[:-1])
        return array_term, hop_r

    def _settle(self) -> None:
        """Account for time since the last rate change, at the latencies then in force (per path
        class; a group's own sums follow when it is brought up to date)."""
        now = self.net.env.now
        dt = now - self._last_t
        act = self._act
        if dt > 0 and len(act):
            if self._kernel is not None:  # (the same, compiled: cluster/_latency.pyx)
                running = self._running > 0
                self._kernel.settle(self._act_lat, dt, running, self._binned)
                self._binned = self._binned or running
            else:
                self._cint[act] += self._act_lat * dt
                if self._running > 0:
                    if not self._binned:  # once per set of latencies
                        self._bins_now()
                    self.hist[self.phase] += np.bincount(self._act_b, weights=self._ccount[act] * dt,
                                                         minlength=len(_BINS) - 1)
        self._last_t = now

    def _bins_now(self) -> np.ndarray:
        """_act_b: the histogram bin of each class in use at its latency now (_act_lat): the bins of
        searchsorted, found for the classes whose latency left the bin it was in when last binned
        only. A rate change moves few latencies across a bin's edge (bins are 1 % wide): 0.4 % of
        them in a ws2012 run of 8000vm-64node, 4.4 % in ws2008r2, with about 3,000 classes in use;
        searchsorted over them all took 85 us a rate change."""
        lat = self._act_lat
        inside = self._act_lo < lat
        inside &= lat <= self._act_hi
        if not inside.all():
            out = (~inside).nonzero()[0]
            j = _BINS.searchsorted(lat[out])
            self._cj[self._act[out]] = j
            self._act_b[out], self._act_lo[out], self._act_hi[out] = _bin_and_edges(j)
        self._binned = True
        return self._act_b

    def _on_rates(self) -> None:
        self._settle()
        if self._act_stale:
            if self._kernel is not None:  # (the same, compiled: taken, and held by the kernel)
                got = self._kernel.take_in_use(self._ncls, self._cctrl, self._chops)
                self._act, self._act_path, self._act_b, self._act_lo, self._act_hi = got
            else:
                act = self._act = (self._ccount[: self._ncls] > 0).nonzero()[0]
                h0, h1, h2 = self._chops
                self._act_path = (self._cctrl[act], h0[act], h1[act], h2[act])
                self._act_b, self._act_lo, self._act_hi = _bin_and_edges(self._cj[act])
            self._act_stale = False
        if self._kernel is not None:  # (the same, compiled: cluster/_latency.pyx)
            lat = self._act_lat = np.empty(len(self._act))
            self._kernel.latencies(self.net.hist_load[-1], self.net.hist_ops_class[-1], lat)
        else:
            lat = self._act_lat = self._latencies(self._act_path)
            self._clat[self._act] = lat
        self._binned = False
        t = float(self.net.env.now)
        # the time series keeps the first state of each `series_step_s` (the percentiles above
        # come from the exact histogram, not from this series)
        if self._running > 0 and (not self.series_t or t >= self.series_t[-1] + self._series_step):
            p50, p99 = _weighted_percentiles(lat, self._ccount[self._act], (50, 99))
            self.series_t.append(t)
            self.series_p50.append(p50)
            self.series_p99.append(p99)

    def latency_now_ms(self, q: float) -> float | None:
        """The VMs' I/O latency percentile `q` (0-100) since the last rate change, weighted by I/O as
        the exact histogram is; None while no VM does I/O. It only reads (a policy may ask it)."""
        w = self._ccount[self._act]
        if len(w) == 0 or w.sum() <= 0:
            return None
        return float(_weighted_percentiles(self._act_lat, w, (q,))[0])

    def set_phase(self, phase: str) -> None:
        self.net.settle_now()
        self._settle()
        self._bring_all()  # (each CSV's sums so far belong to the phase that ends)
        if self.phase == "baseline" and self.baseline_snapshot is None:
            ng = len(self.groups)
            self.baseline_snapshot = (self._clat[self._gcls[:ng]], self._counts[:ng].astype(float))
        self.phase = phase
        if self._kernel is not None:
            self._kernel.phase(self.hist[phase])

    def percentiles(self, phase: str) -> tuple[float, float]:
        h = self.hist[phase]
        if h.sum() <= 0:
            if phase == "baseline" and self.baseline_snapshot is not None:
                lat, cnt = self.baseline_snapshot
                if cnt.sum() > 0:
                    return _weighted_percentiles(lat, cnt, (50, 99))
            return (math.nan, math.nan)
        mids = np.sqrt(_BINS[:-1] * _BINS[1:])  # a bin's reading: its geometric middle
        return _weighted_percentiles(mids, h, (50, 99))

    def finish(self) -> None:
        self._settle()
        self._bring_all()
        for vm in list(self.vm_group):
            gid = self.vm_group[vm]
            self._vm_acc[vm] = self._vm_acc.get(vm, 0.0) + self._gint.item(gid) - self._vm_base[vm]
            self._vm_base[vm] = self._gint.item(gid)
            self._vm_time[vm] = self._vm_time.get(vm, 0.0) + self.net.env.now - self._vm_since[vm]
            self._vm_since[vm] = self.net.env.now

    def csv_mean_latency_ms(self, csv: str, phase: str) -> float:
        """Mean I/O latency of the CSV's VMs in a phase (baseline: the state before the backup
        began, when it began at once)."""
        i = self._csv_index[csv]
        t = self.csv_time[phase][i]
        if t > 0:
            return float(self.csv_lat[phase][i] / t)
        if phase == "baseline" and self.baseline_snapshot is not None:
            lat, cnt = self.baseline_snapshot
            mine = self._gcsv[: len(cnt)] == i
            w = cnt[mine].sum()
            return float((lat[mine] * cnt[mine]).sum() / w) if w > 0 else math.nan
        return math.nan

    def vm_mean_latency_ms(self, vm: str) -> float:
        t = self._vm_time.get(vm, 0.0)
        return self._vm_acc.get(vm, 0.0) / t if t > 0 else math.nan


def _flowing(g: Group) -> bool:
    """Has the group a flow that is active (its read or its write)?"""
    return (g.read_flow is not None and g.read_flow.active) or (g.write_flow is not None and g.write_flow.active)


def _bin_of(j: np.ndarray) -> np.ndarray:
    """The histogram bin of searchsorted(_BINS, x) = j: the one below, below the first edge the
    first bin, above the last the last bin."""
    b = j - 1  # (np.clip's wrapper cost more than the work)
    np.maximum(b, 0, out=b)
    return np.minimum(b, len(_BINS) - 2, out=b)


_BIN_OF = _bin_of(np.arange(len(_BINS) + 1))  # _bin_of(j) for each j searchsorted can give (one gather)


def _bin_and_edges(j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For searchsorted(_BINS, x) = j: x's histogram bin and the edges below and above x."""
    return _BIN_OF[j], _BELOW[j], _ABOVE[j]


def _twice_the_room(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each array followed by as many zeros (per-class and per-group rows, grown by doubling)."""
    return tuple(np.concatenate([a, np.zeros_like(a)]) for a in arrays)


def _weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs: tuple[float, ...]) -> tuple[float, ...]:
    """The smallest value whose cumulative weight reaches q % of the total (numpy's weighted
    percentile, method "inverted_cdf": a latency some VM actually saw, never an interpolation).

    numpy's steps for one 1-d array, written out (np.percentile's checks and reshaping around them
    were half of its 180 us for 3,000 classes in use, at each of 962 series steps of a ws2012 run
    of 8000vm-64node): the values sorted (the same argsort), the weights' cumulative sum in that
    order divided by its last, leading zeros set to -1, the first index where it reaches q / 100
    (searchsorted, left), at most the last; a NaN among the values (sorted last) makes every
    percentile NaN. What numpy refuses (no values, a q outside 0-100, negative weights, weights of
    NaN, infinity or all zero) goes to numpy, which raises as it did. Tested against np.percentile."""
    n = len(values)
    if n and all(0 <= q <= 100 for q in qs) and not (weights < 0).any():
        order = values.argsort()
        v = values[order]
        cdf = weights[order].cumsum(dtype=np.float64)
        total = cdf[-1]
        if 0.0 < total < math.inf:  # (else numpy raises: weights of NaN or infinity, or all zero)
            cdf /= total
            if cdf[0] == 0:
                cdf[cdf == 0] = -1
            if v[-1] != v[-1]:
                return tuple(float(v[-1]) for _ in qs)
            idx = np.searchsorted(cdf, np.true_divide(qs, 100), side="left")
            np.minimum(idx, n - 1, out=idx)
            return tuple(float(x) for x in v[idx])
    return tuple(float(x) for x in np.percentile(values, qs, weights=weights, method="inverted_cdf"))
