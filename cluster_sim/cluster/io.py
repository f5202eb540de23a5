"""Steady VM I/O on the fluid network, and the I/O latency VMs feel.

Each VM's workload is a steady demand (its read and write MiB/s) on its path: direct through
its node's storage fabric to the array, or, while its CSV is redirected and its node is not the
coordinator, over SMB through both nodes' cluster NICs and the coordinator's fabric [MS]. VMs
of one template on the same node and CSV share a path and a demand, so one weighted flow
stands for all of them (exact under max-min fairness; see kernel/fluid.py).

Latency: each resource on the path is an M/M/1 queue, whose mean response time is
R = S / (1 - rho) (Kleinrock, *Queueing Systems* vol. 1, 1975, eq. 3.26), S the unloaded
service time and rho the utilisation, capped at `run.latency_rho_max` so a saturated link
gives a large finite latency. A VM's I/O latency is the array's R plus each network hop's R.
The array's utilisation is the highest of its read bandwidth, write bandwidth and back-end
IOPS utilisations; back-end IOPS count copy-on-write: with read fraction r and a fraction f
of writes hitting not-yet-copied blocks, a host I/O costs r + (1-r)(1+2f) back-end I/Os [V].
Reported percentiles are over VMs and time (each VM's mean latency, weighted by duration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cluster_sim.cluster.csv import CsvTable
from cluster_sim.cluster.topology import ARRAY_READ, ARRAY_WRITE, VmSpec, cluster_nic, fabric
from cluster_sim.kernel.fluid import Flow, FluidNetwork
from cluster_sim.scenario import Scenario

_BINS = np.logspace(-3, 6, 901)  # latency histogram edges in ms: 0.001 ms .. 1000 s
PHASES = ("baseline", "backup", "after")


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
    members: set[str] = field(default_factory=set)
    read_flow: Flow | None = None
    write_flow: Flow | None = None
    redirected: bool = False


class IoModel:
    def __init__(self, sc: Scenario, net: FluidNetwork, csvs: CsvTable, vms: list[VmSpec]):
        self.sc = sc
        self.net = net
        self.csvs = csvs
        self.spec = {v.name: v for v in vms}
        self.vm_group: dict[str, int] = {}
        self.groups: list[Group] = []
        self._gkey: dict[tuple[str, str, str], int] = {}
        self.protected: dict[str, bool] = {c: False for c in csvs.volumes}
        arr = sc.storage.array
        self._cap = net.capacity
        self._iops = arr.iops
        self._s_array = arr.service_time_ms
        self._rho_max = sc.run.latency_rho_max
        self._series_step = sc.run.latency_series_step_s
        self._read_i = net.link(ARRAY_READ)
        self._write_i = net.link(ARRAY_WRITE)
        nw = sc.cluster.networks
        self._hop_service = np.array(
            [nw.smb_hop_service_ms if n.startswith("cluster:") else nw.fabric_service_ms for n in net.link_names]
        )
        # per-group path for latency: hop link indices padded with -1
        self._hops = np.full((0, 3), -1, dtype=int)
        self._counts = np.zeros(0)
        self._integral = np.zeros(0)  # latency x time per group (ms*s)
        self._vm_base: dict[str, float] = {}
        self._vm_acc: dict[str, float] = {}
        self._vm_time: dict[str, float] = {}
        self._vm_since: dict[str, float] = {}
        self.phase = "baseline"
        self.hist = {p: np.zeros(len(_BINS) - 1) for p in PHASES}
        self.baseline_snapshot: tuple[np.ndarray, np.ndarray] | None = None
        self.series_t: list[float] = []
        self.series_p50: list[float] = []
        self.series_p99: list[float] = []
        self._last_t = net.env.now
        self._last_lat = np.zeros(0)
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
            self.groups.append(Group(gid, node, vm.csv, vm.template, vm.read_mib_s, vm.write_mib_s, r_ops, w_ops))
            self._gkey[key] = gid
            self._hops = np.vstack([self._hops, np.full((1, 3), -1, dtype=int)])
            self._counts = np.append(self._counts, 0.0)
            self._integral = np.append(self._integral, 0.0)
            self._last_lat = np.append(self._last_lat, 0.0)
        return self.groups[gid]

    def start_vm(self, vm: str, node: str) -> None:
        spec = self.spec[vm]
        if not spec.running or vm in self.vm_group:
            return
        self._settle()
        g = self._group_for(spec, node)
        g.members.add(vm)
        self.vm_group[vm] = g.gid
        self._vm_base[vm] = self._integral[g.gid]
        self._vm_since[vm] = self.net.env.now
        self._refresh(g)

    def stop_vm(self, vm: str) -> None:
        gid = self.vm_group.pop(vm, None)
        if gid is None:
            return
        self._settle()
        g = self.groups[gid]
        g.members.discard(vm)
        self._vm_acc[vm] = self._vm_acc.get(vm, 0.0) + self._integral[gid] - self._vm_base.pop(vm)
        self._vm_time[vm] = self._vm_time.get(vm, 0.0) + self.net.env.now - self._vm_since.pop(vm)
        self._refresh(g)

    def move_vm(self, vm: str, node: str) -> None:
        self.stop_vm(vm)
        self.start_vm(vm, node)

    # -- paths -----------------------------------------------------------------------------------
    def _path(self, g: Group) -> tuple[list[str], bool]:
        vol = self.csvs[g.csv]
        if vol.redirected and vol.coordinator != g.node:
            return [cluster_nic(g.node), cluster_nic(vol.coordinator), fabric(vol.coordinator)], True
        return [fabric(g.node)], False

    def _write_multiplier(self, csv: str) -> float:
        if not self.protected[csv]:
            return 1.0
        arr = self.sc.storage.array
        if arr.snapshot_style == "cow":
            return 1.0 + 2.0 * arr.cow_first_write_fraction
        return 1.0 + arr.row_metadata_overhead

    def _refresh(self, g: Group) -> None:
        """(Re)build a group's two flows for its current members and path."""
        for f in (g.read_flow, g.write_flow):
            if f is not None:
                self.net.stop(f)
        g.read_flow = g.write_flow = None
        n = len(g.members)
        self._counts[g.gid] = n
        path, g.redirected = self._path(g)
        hops = [self.net.link(x) for x in path]
        self._hops[g.gid, :] = -1
        self._hops[g.gid, : len(hops)] = hops
        if n == 0:
            return
        if g.read_mib_s > 0:
            g.read_flow = self.net.start(path + [ARRAY_READ], cap_mib_s=n * g.read_mib_s, weight=n,
                                         tag=("vm_io", g.gid, "read"), ops_per_mib=g.read_ops_per_mib)
        if g.write_mib_s > 0:
            g.write_flow = self.net.start(path + [ARRAY_WRITE], cap_mib_s=n * g.write_mib_s, weight=n,
                                          tag=("vm_io", g.gid, "write"),
                                          ops_per_mib=g.write_ops_per_mib * self._write_multiplier(g.csv))

    def _csv_changed(self, csv: str) -> None:
        for g in self.groups:
            if g.csv == csv and g.members and self._path(g)[1] != g.redirected:
                self._refresh(g)
            elif g.csv == csv and g.members and g.redirected:
                self._refresh(g)  # coordinator moved while redirected

    def set_protected(self, csv: str, on: bool) -> None:
        """A storage snapshot exists (or no longer) on this LUN: writes pay copy-on-write."""
        self.protected[csv] = on
        for g in self.groups:
            if g.csv == csv and g.write_flow is not None:
                self.net.set_ops(g.write_flow, g.write_ops_per_mib * self._write_multiplier(csv))

    # -- latency ---------------------------------------------------------------------------------
    def _latencies(self) -> np.ndarray:
        net = self.net
        load = net.hist_load[-1]
        rho = np.minimum(load / self._cap, self._rho_max)
        rho_arr = max(net.hist_ops[-1] / self._iops, rho[self._read_i], rho[self._write_i])
        rho_arr = min(rho_arr, self._rho_max)
        array_term = self._s_array / (1.0 - rho_arr)
        hop_r = self._hop_service / (1.0 - rho)  # per link
        hop_r = np.append(hop_r, 0.0)  # index -1 -> 0
        return array_term + hop_r[self._hops].sum(axis=1)

    def _settle(self) -> None:
        """Account for time since the last rate change, at the latencies then in force."""
        now = self.net.env.now
        dt = now - self._last_t
        if dt > 0 and len(self._last_lat):
            w = self._counts[: len(self._last_lat)] * dt
            self._integral[: len(self._last_lat)] += self._last_lat * dt
            if w.sum() > 0:
                idx = np.clip(np.searchsorted(_BINS, self._last_lat) - 1, 0, len(_BINS) - 2)
                self.hist[self.phase] += np.bincount(idx, weights=w, minlength=len(_BINS) - 1)
        self._last_t = now

    def _on_rates(self) -> None:
        self._settle()
        lat = self._latencies()
        self._last_lat = lat
        t = float(self.net.env.now)
        # the time series keeps the first state of each `series_step_s` (the percentiles above
        # come from the exact histogram, not from this series)
        if self._counts.sum() > 0 and (not self.series_t or t >= self.series_t[-1] + self._series_step):
            p50, p99 = _weighted_percentiles(lat, self._counts, (50, 99))
            self.series_t.append(t)
            self.series_p50.append(p50)
            self.series_p99.append(p99)

    def set_phase(self, phase: str) -> None:
        self.net.settle_now()
        self._settle()
        if self.phase == "baseline" and self.baseline_snapshot is None:
            self.baseline_snapshot = (self._last_lat.copy(), self._counts[: len(self._last_lat)].copy())
        self.phase = phase

    def percentiles(self, phase: str) -> tuple[float, float]:
        h = self.hist[phase]
        if h.sum() <= 0:
            if phase == "baseline" and self.baseline_snapshot is not None:
                lat, cnt = self.baseline_snapshot
                if cnt.sum() > 0:
                    return _weighted_percentiles(lat, cnt, (50, 99))
            return (math.nan, math.nan)
        cdf = np.cumsum(h) / h.sum()
        mids = np.sqrt(_BINS[:-1] * _BINS[1:])
        return (float(mids[np.searchsorted(cdf, 0.50)]), float(mids[np.searchsorted(cdf, 0.99)]))

    def finish(self) -> None:
        self._settle()
        for vm in list(self.vm_group):
            gid = self.vm_group[vm]
            self._vm_acc[vm] = self._vm_acc.get(vm, 0.0) + self._integral[gid] - self._vm_base[vm]
            self._vm_base[vm] = self._integral[gid]
            self._vm_time[vm] = self._vm_time.get(vm, 0.0) + self.net.env.now - self._vm_since[vm]
            self._vm_since[vm] = self.net.env.now

    def vm_mean_latency_ms(self, vm: str) -> float:
        t = self._vm_time.get(vm, 0.0)
        return self._vm_acc.get(vm, 0.0) / t if t > 0 else math.nan


def _weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs: tuple[float, ...]) -> tuple[float, ...]:
    order = np.argsort(values)
    v = values[order]
    w = weights[order]
    cdf = np.cumsum(w) / w.sum()
    return tuple(float(v[min(np.searchsorted(cdf, q / 100.0), len(v) - 1)]) for q in qs)
