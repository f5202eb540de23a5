"""One generation on a fresh cluster: assemble the cluster, the backup context and the data plane,
run the schedule to its end (or the horizon), audit, and summarise (summary.py); the progress readings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cluster_sim.audit import account_fault_leaks, audit, count_leaks
from cluster_sim.backup.context import BackupContext
from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.registry import body_of, quorum_rule_of
from cluster_sim.cluster.events import schedule_events
from cluster_sim.cluster.model import ClusterModel
from cluster_sim.cluster.nodes import LocalBackend, RayBackend
from cluster_sim.cluster.topology import lower_bound_s
from cluster_sim.data.plane import DataPlane
from cluster_sim.kernel.collector import fewer_collections
from cluster_sim.kernel.rng import Streams
from cluster_sim.results import (
    GenerationResult,
    guest_results,
    mixed_results,
)
from cluster_sim.scenario import Scenario
from cluster_sim.scenario.placement import place_fleet
from cluster_sim.simulation.summary import _csv_rows, _summary, _vm_rows

Progress = Callable[[str, str], None]  # (generation, "start" | "done")


@dataclass(frozen=True)
class SimProgress:
    """Where one generation's simulation is, read (never scheduled) by a wall-clock sampler."""

    sim_s: float  # simulated time reached
    vms_done: int  # VMs of the current job with their outcome
    vms_total: int  # VMs of the current job (0 before the first job starts, and in a steady-state run)
    job: int  # the current job (0-based); 0 before the first starts
    jobs: int  # jobs in the schedule (0: a steady-state run)
    mode: str  # the current job's mode (full | incremental), "" in a steady-state run
    expected_end_s: float | None  # a guess of the simulated end: a full job's start + its copy's lower
    #                               bound (a steady-state run: its duration); None for incrementals


SimProgressFn = Callable[[str, SimProgress], None]  # (generation, where it is)
PROGRESS_INTERVAL_S = 0.5  # [P] wall-clock seconds between two readings of a running generation



@fewer_collections()  # (kernel/collector.py: the collector's time, never a result)
def run_generation(sc: Scenario, generation: str | None, backend: LocalBackend | RayBackend,
                   watch: Callable[[Callable[[], SimProgress]], None] | None = None) -> GenerationResult:
    """One generation on a fresh cluster. `watch` is given a function that reads where the simulation
    is (for a progress display sampling it from another thread: it only reads, so results stay the same)."""
    wall0 = time.perf_counter()
    vms = place_fleet(sc)
    streams = Streams(sc.seed)
    cm = ClusterModel(sc, vms, backend, streams)
    cm.faults.quorum_rule = quorum_rule_of(generation)
    ctx = None
    if generation is not None:
        assert sc.backup is not None
        ctx = BackupContext(cm, generation, sc.backup, _data_plane(sc, cm, streams), streams)
    cm.start()
    schedule_events(cm)
    jobs: list[BackupJob] = []
    if watch is not None:
        watch(lambda: _where(cm, jobs))
    if ctx is not None:
        assert sc.backup is not None and generation is not None
        all_done = cm.env.event()
        ctx.jobs = jobs

        def new_job(mode: str, start_s: float, index: int) -> BackupJob:
            return BackupJob(cm, generation, sc.backup, mode=mode, start_s=start_s, index=index, ctx=ctx)

        cm.env.process(ctx.run_schedule(all_done, new_job, body_of(generation)))
        cm.env.run(until=all_done | cm.env.timeout(sc.run.until_s))
        if not all_done.triggered and jobs:
            job = jobs[-1]
            for name in sorted(job.records):
                if job.records[name].outcome is None:
                    job.finalize(name, "failed", "horizon_reached")
            job.ended_s = None
            job.verify()
    else:
        cm.env.run(until=min(sc.run.steady_duration_s, sc.run.until_s))
    cm.finish()
    cm.trace.close_open_spans()
    node_state = cm.collect_node_state()
    leaks = count_leaks(cm, node_state)
    faults = bool(cm.failures) or any(ev.kind in ("crash_node", "snapshot_fault") for ev in sc.events)
    # leaks an injected fault left behind are counted against it (cluster/faults.py Ledger); the
    # auditor's "leaks without any fault" looks at the others
    fault_leaks, unexplained, fault_violations = account_fault_leaks(cm, leaks, node_state)
    result_audit = audit(cm, jobs, unexplained, faults, node_state)
    if fault_violations:
        result_audit = result_audit.model_copy(update={"ok": False,
                                                       "violations": result_audit.violations + fault_violations})
    summary = _summary(sc, generation, cm, jobs, leaks, result_audit, ctx.tracker if ctx else None)
    if fault_leaks is not None:
        summary = summary.model_copy(update={"fault_leaks": fault_leaks})
    rows = _vm_rows(sc, generation, cm, jobs)
    if ctx is not None and ctx.mixed is not None:  # a mixed-version cluster (backup/mixed.py)
        summary, rows = mixed_results(ctx.mixed, cm, jobs, summary, rows)
    if ctx is not None and ctx.guest is not None:  # guest clusters (backup/guest.py)
        summary, rows = guest_results(ctx.guest, jobs, summary, rows)
    csv_rows = _csv_rows(cm)
    g = GenerationResult(
        summary=summary,
        vms=rows,
        csvs=csv_rows,
        latency_series={"t_s": cm.io.series_t, "p50_ms": cm.io.series_p50, "p99_ms": cm.io.series_p99},
        trace=cm.trace,
        wall_s=time.perf_counter() - wall0,
        round_trips=cm.gateway.round_trips,
        sim_events=cm.env.steps,
    )
    return g


def _where(cm: ClusterModel, jobs: list[BackupJob]) -> SimProgress:
    """Read (from any thread) how far a generation's simulation is: the clock and the current job's
    count of VMs without an outcome. Nothing is scheduled or changed."""
    sc = cm.sc
    now = cm.env.now
    if sc.backup is None:
        return SimProgress(now, 0, 0, 0, 0, "", min(sc.run.steady_duration_s, sc.run.until_s))
    n_jobs = len(sc.backup.schedule) if sc.backup.schedule else 1
    job = jobs[-1] if jobs else None
    if job is None:
        return SimProgress(now, 0, 0, 0, n_jobs, "", None)
    total = len(job.records)
    expected = None
    if job.mode == "full":
        expected = job.start_at + lower_bound_s(sc, sum(v.used_mib for v in cm.vms))
    return SimProgress(now, total - job.remaining, total, job.index, n_jobs, job.mode, expected)


class _Sampler:
    """A wall-clock timer thread that reads a running generation every `interval_s` and passes what it
    reads to `send` (SimPy-independent: it schedules no event, so the results stay byte-identical)."""

    def __init__(self, send: Callable[[SimProgress], None], interval_s: float = PROGRESS_INTERVAL_S):
        self.send = send
        self.interval_s = interval_s
        self.read: Callable[[], SimProgress] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sim-progress")

    def watch(self, read: Callable[[], SimProgress]) -> None:
        self.read = read
        if not self._thread.is_alive():
            self._thread.start()

    def _loop(self) -> None:
        last = None
        while not self._stop.wait(self.interval_s):
            read = self.read
            if read is None:
                continue
            try:
                now = read()
            except Exception:  # noqa: BLE001 - a reading taken mid-update is skipped, never fatal
                continue
            if now != last:
                last = now
                self.send(now)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)


def _data_plane(sc: Scenario, cm: ClusterModel, streams: Streams) -> DataPlane | None:
    """The data plane (every VM's disk as block versions) when the run verifies its backups; it
    follows what the cluster does to the VMs (a VM lost stops writing, its guest cache gone; a
    failed-over VM that boots writes again)."""
    if sc.backup is None or not sc.backup.verify:
        return None
    tpl = {t.template: t.workload for t in sc.fleet}
    plane = DataPlane(cm.vms, streams, sc.storage.block_size_mib,
                      flush={v.name: tpl[v.template].guest_flush_interval_s for v in cm.vms})
    plane.follow(cm)
    return plane
