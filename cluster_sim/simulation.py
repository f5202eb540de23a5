"""Runs: one fresh cluster per generation, on the local or the Ray node backend."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster_sim.audit import account_fault_leaks, audit, count_leaks
from cluster_sim.backup.capture import expected_verdict
from cluster_sim.backup.context import BackupContext
from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.registry import REGISTRY, body_of, quorum_rule_of
from cluster_sim.backup.tracking import ChangeTracker
from cluster_sim.cluster.events import schedule_events
from cluster_sim.cluster.model import ClusterModel
from cluster_sim.cluster.nodes import LocalBackend, RayBackend
from cluster_sim.cluster.topology import lower_bound_s
from cluster_sim.data.plane import DataPlane
from cluster_sim.kernel.rng import Streams
from cluster_sim.results import (
    CsvRow,
    GenerationResult,
    JobSummary,
    Latency,
    MigrationDowntime,
    Migrations,
    NodeFailureOut,
    Outcomes,
    RunResult,
    Summary,
    Verification,
    VmRow,
    r6,
)
from cluster_sim.scenario import Scenario
from cluster_sim.scenario.placement import node_name, place_fleet
from cluster_sim.scenario.policy_ref import policy_code_paths

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


def _nan_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else r6(x)


def run_generation(sc: Scenario, generation: str | None, backend: LocalBackend | RayBackend,
                   kill_actors: list[tuple[str, float]] | None = None,
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
    for node, at_s in kill_actors or []:
        cm.env.process(_kill_later(cm, backend, node, at_s))
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


def _kill_later(cm: ClusterModel, backend: LocalBackend | RayBackend, node: str, at_s: float):  # type: ignore[no-untyped-def]
    """Test hook: the node's actor dies at `at_s` without the cluster being told."""
    yield cm.env.timeout(at_s)
    cm.trace("actor_killed", node=node)
    # every batch sent so far has run (a local node applies a batch when it is sent; an actor may
    # still be working through one), so the death falls at the same point on both backends
    cm.gateway.harvest()
    if isinstance(backend, RayBackend):
        backend.kill_behind_our_back(node)
    else:
        backend.kill(node)


def _verification(jobs: list[BackupJob]) -> Verification:
    v = Counter()
    for job in jobs:
        for rec in job.records.values():
            if rec.verified:
                v["restored"] += 1
                v[rec.verified] += 1
                expected = expected_verdict(rec.outcome or "")
                if expected is not None and expected != rec.verified:
                    v["claim_mismatches"] += 1
    return Verification(**{k: v.get(k, 0) for k in Verification.model_fields})


def _job_summary(sc: Scenario, job: BackupJob) -> JobSummary:
    outcomes = Counter(rec.outcome for rec in job.records.values())
    end = job.ended_s if job.ended_s is not None else job.env.now
    copied = sum(r.bytes_copied_mib for r in job.records.values())
    full_reasons = Counter(r.copy_reason or "full_job" for r in job.records.values()
                           if r.copy == "full" and r.outcome not in (None, "failed"))
    return JobSummary(
        index=job.index, mode=job.mode, start_s=r6(job.started_s or 0.0),
        backup_window_s=r6(end - job.started_s if job.started_s is not None else 0.0),
        window_lower_bound_s=r6(lower_bound_s(sc, copied)),
        bytes_copied_mib=r6(copied),
        full_copies=sum(full_reasons.values()),
        full_copy_reasons=dict(sorted(full_reasons.items())) if job.mode == "incremental" else {},
        outcomes=Outcomes(**{k: outcomes.get(k, 0) for k in Outcomes.model_fields}),
        verification=_verification([job]),
    )


def _mean(xs: list[float]) -> float | None:
    return r6(sum(xs) / len(xs)) if xs else None


def _summary(sc: Scenario, generation: str | None, cm: ClusterModel, jobs: list[BackupJob], leaks, aud,  # type: ignore[no-untyped-def]
             tracker: ChangeTracker | None = None) -> Summary:
    """Counters add up over the jobs of a schedule; outcomes and torn captures are the last
    job's (the protection the cluster is left with); the window is the first job's (with a
    schedule: the full's), with the mean full and incremental windows beside it; each job is
    also listed under `jobs`."""
    last = jobs[-1] if jobs else None
    outcomes = Counter(rec.outcome for rec in last.records.values()) if last else Counter()
    reasons: Counter[str] = Counter()
    for job in jobs:
        reasons.update(rec.reason for rec in job.records.values() if rec.outcome == "failed")
    torn = sum(1 for rec in last.records.values() if rec.outcome != "failed" and rec.torn) if last else 0
    copied = sum(rec.bytes_copied_mib for job in jobs for rec in job.records.values())
    job_summaries = [_job_summary(sc, j) for j in jobs]
    first = job_summaries[0] if job_summaries else None
    downtime = sum(_vm_downtime(cm, jobs, v.name) for v in cm.vms)
    redirected = {v.name: v.redirected_s for v in cm.csvs}
    ms = cm.migrations.stats
    mig_dt = sorted(ms.downtime_s or [])
    b50, b99 = cm.io.percentiles("baseline")
    d50, d99 = cm.io.percentiles("backup")
    lun_snaps = sum(j.lun_snapshots_in_sets for j in jobs)
    return Summary(
        scenario=sc.name,
        seed=sc.seed,
        generation=generation or "steady",
        vm_count=len(cm.vms),
        node_count=len(cm.nodes),
        csv_count=len(cm.csvs.volumes),
        backup_window_s=first.backup_window_s if first else 0.0,
        window_lower_bound_s=first.window_lower_bound_s if first else r6(lower_bound_s(sc, copied)),
        full_window_s=_mean([j.backup_window_s for j in job_summaries if j.mode == "full"]),
        incremental_window_s=_mean([j.backup_window_s for j in job_summaries if j.mode == "incremental"]),
        hw_snapshots_created=cm.array.created,
        sw_snapshots_created=sum(j.sw_snapshots for j in jobs),
        snapshot_sets=sum(j.snapshot_sets for j in jobs),
        effective_vms_per_snapshot=r6(sum(j.vms_in_sets for j in jobs) / lun_snaps) if lun_snaps else None,
        hold_writes_overruns=sum(j.hold_overruns for j in jobs),
        writer_enumeration_s=r6(sum(j.enumeration_s for j in jobs)),
        snapshot_surfacing_s=r6(sum(j.surfacing_s for j in jobs)),
        hw_snapshots_deleted=cm.array.deleted,
        peak_pending_snapshots=cm.array.peak_pending,
        peak_snapshots_per_lun=cm.array.peak_per_lun(),
        host_mounts=sum(j.host_mounts for j in jobs),
        scsi_hot_adds=sum(j.scsi_hot_adds for j in jobs),
        redirected_s_total=r6(sum(redirected.values())),
        redirected_s_max_csv=r6(max(redirected.values(), default=0.0)),
        outcomes=Outcomes(**{k: outcomes.get(k, 0) for k in Outcomes.model_fields}),
        failures_by_reason=dict(sorted(reasons.items())),
        torn_undetected=torn,
        vm_downtime_s_total=r6(downtime),
        io_latency_ms=Latency(
            baseline_p50=_nan_none(b50), baseline_p99=_nan_none(b99),
            backup_p50=_nan_none(d50), backup_p99=_nan_none(d99),
        ),
        bytes_copied_mib=r6(copied),
        avhdx_vm_s=r6(sum(j.avhdx_vm_s for j in jobs)),
        leaks=leaks,
        node_failures=[NodeFailureOut(node=f.node, detected_s=r6(f.detected_s), how=f.how, vms_down=f.vms_down)
                       for f in cm.failures],
        migrations=Migrations(requested=ms.requested, completed=ms.completed, refused=ms.refused,
                              retried=ms.retried, aborted=ms.aborted, failed=ms.failed),
        migration_downtime_ms=MigrationDowntime(
            p50=r6(1000 * _pct(mig_dt, 50)) if mig_dt else None,
            p99=r6(1000 * _pct(mig_dt, 99)) if mig_dt else None,
            max=r6(1000 * mig_dt[-1]) if mig_dt else None,
        ),
        migration_delay_s_total=r6(ms.delay_s_total),
        failovers=cm.failovers,
        vms_restarted=cm.vms_restarted,
        vms_without_host=len(cm.unplaced),
        retried_vms=sum(j.retried_vms for j in jobs),
        retries=sum(max(0, r.attempts - 1) for j in jobs for r in j.records.values()),
        change_tracking_lost=dict(sorted(tracker.lost.items())) if tracker is not None else {},
        verification=_verification(jobs),
        jobs=job_summaries,
        sim_end_s=r6(cm.env.now),
        trace_events=len(cm.trace),
        audit=aud,
    )


def _pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def _vm_downtime(cm: ClusterModel, jobs: list[BackupJob], vm: str) -> float:
    """Saved-state time during the backups plus migration blackouts and failover outages."""
    return sum(j.records[vm].downtime_s for j in jobs) + cm.vm_downtime.get(vm, 0.0)


def _vm_rows(sc: Scenario, generation: str | None, cm: ClusterModel, jobs: list[BackupJob]) -> list[VmRow]:
    """One row per VM: the last job's outcome; bytes and downtime over every job."""
    rows = []
    job = jobs[-1] if jobs else None
    for spec in cm.vms:
        rec = job.records[spec.name] if job else None
        lat = cm.io.vm_mean_latency_ms(spec.name)
        rows.append(VmRow(
            vm=spec.name, template=spec.template, guest_os=spec.guest_os, node=cm.host[spec.name], csv=spec.csv,
            generation=generation or "steady",
            outcome=(rec.outcome or "") if rec else ("running" if spec.running and cm.host[spec.name] in cm.up else
                                                      "down" if spec.running else "off"),
            reason=rec.reason if rec else "",
            start_s=_nan_none(rec.start_s) if rec and rec.start_s is not None else None,
            end_s=_nan_none(rec.end_s) if rec and rec.end_s is not None else None,
            retries=max(0, rec.attempts - 1) if rec else 0,
            bytes_copied_mib=r6(sum(j.records[spec.name].bytes_copied_mib for j in jobs)),
            downtime_s=r6(_vm_downtime(cm, jobs, spec.name)),
            snapshot_id=rec.snapshot_id if rec else "",
            migrated_during_backup=rec.migrated_during_backup if rec else False,
            nodes_visited="|".join(cm.visited[spec.name]),
            verified=rec.verified if rec else "",
            copy_kind=rec.copy if rec else "",
            copy_reason=rec.copy_reason if rec else "",
            read_mib_s=r6(spec.read_mib_s), write_mib_s=r6(spec.write_mib_s),
            mean_latency_ms=_nan_none(lat),
        ))
    return rows


def _csv_rows(cm: ClusterModel) -> list[CsvRow]:
    rows = []
    for vol in cm.csvs:
        vms = [s for s in cm.vms if s.csv == vol.name]
        lun = cm.array.luns[vol.name]
        rows.append(CsvRow(
            csv=vol.name, coordinator=vol.coordinator, vms=len(vms),
            read_mib_s=r6(sum(s.read_mib_s for s in vms if s.running)),
            write_mib_s=r6(sum(s.write_mib_s for s in vms if s.running)),
            redirected_s=r6(vol.redirected_s),
            hw_snapshots=sum(1 for s in cm.array.snapshots.values() if s.csv == vol.name and not s.software),
            peak_snapshots=lun.peak_existing,
            latency_ms_baseline=_nan_none(cm.io.csv_mean_latency_ms(vol.name, "baseline")),
            latency_ms_backup=_nan_none(cm.io.csv_mean_latency_ms(vol.name, "backup")),
        ))
    return rows


# ----------------------------------------------------------------------------------------------
# Ray lifecycle
# ----------------------------------------------------------------------------------------------
def package_runtime_env() -> dict[str, Any]:
    """Ray runtime_env that ships this package's code to every worker of the job (`py_modules`):
    the nodes of a Ray cluster need Ray and the dependencies, not cluster_sim itself."""
    package = os.path.dirname(os.path.abspath(__file__))
    # ... and the code of the backup policies the scenarios named (scenario/policy_ref.py)
    return {"py_modules": [package, *policy_code_paths()], "excludes": ["__pycache__/", "*.pyc"]}


class RayUnavailable(RuntimeError):
    """Ray cannot be started or joined: nobody answers at the address, or it refuses us."""


_AUTH_HELP = ("the Ray cluster at {address} uses token authentication and this process has no valid token "
              "(RAY_AUTH_MODE={mode}). Set RAY_AUTH_MODE=token and give the cluster's token: "
              "RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file holding it> (on the head node, "
              "`ray get-auth-token` prints it), then run again")

# Asks the GCS at an address for its cluster id, in a child process (the Ray client library retries for
# tens of seconds and logs every try on stderr; a child is quiet and can be stopped).
_GCS_PROBE = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1])
except Exception as exc:
    print(type(exc).__name__)
else:
    print("ok")
"""


def _auth_refused(exc: BaseException | None) -> bool:
    """Does this ray.init failure (or anything in its chain) say the token was missing or wrong?"""
    seen = 0
    while exc is not None and seen < 10:
        text = f"{type(exc).__name__}: {exc}"
        if "AuthenticationError" in text or "InvalidAuthToken" in text or "Unauthenticated" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def check_ray_address(address: str, timeout_s: float = 5.0, probe_timeout_s: float = 20.0) -> None:
    """Fail fast, before ray.init (which retries for minutes), on a `host:port` nobody answers on,
    and on a cluster that refuses us for want of its authentication token. Raises RayUnavailable."""
    import socket
    import subprocess

    m = re.fullmatch(r"(ray://)?\[?([^\]/]+?)\]?:(\d+)", address.strip())
    if not m:
        return  # "auto" and the like: leave it to ray.init
    try:
        socket.create_connection((m.group(2), int(m.group(3))), timeout=timeout_s).close()
    except OSError as exc:
        raise RayUnavailable(f"cannot connect to {address}: {exc.strerror or exc}") from None
    if m.group(1):
        return  # a Ray Client server (ray://), not the GCS: ray.init reports its own errors
    try:
        probe = subprocess.run([sys.executable, "-c", _GCS_PROBE, address.strip()], capture_output=True,
                               text=True, timeout=probe_timeout_s)
    except subprocess.TimeoutExpired:
        return  # no verdict (not a Ray GCS?): ray.init says what it finds
    last = (probe.stdout.strip().splitlines() or [""])[-1]
    if last == "AuthenticationError":
        raise RayUnavailable(_AUTH_HELP.format(address=address, mode=os.environ.get("RAY_AUTH_MODE", "unset")))


class RaySession:
    """Starts a local Ray instance (or joins `address`, shipping this package to its workers with
    `package_runtime_env`) and shuts down only what it started.

    Raises RayUnavailable (with what to do) if the address does not answer or refuses us."""

    def __init__(self, num_cpus: int | None = None, address: str | None = None):
        import ray

        self.ray = ray
        self.started = False
        if address:
            check_ray_address(address)
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                if address:
                    ray.init(address=address, runtime_env=package_runtime_env(), **kw)
                else:
                    ray.init(address="local", num_cpus=num_cpus or min(2, os.cpu_count() or 1), **kw)
            except Exception as exc:  # noqa: BLE001 - ray.init raises ConnectionError, RuntimeError...
                if _auth_refused(exc):
                    raise RayUnavailable(_AUTH_HELP.format(address=address or "local",
                                                           mode=os.environ.get("RAY_AUTH_MODE", "unset"))) from None
                raise
            self.started = True

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False


# Relative cost of one generation on the local backend, to hand out the longest first when
# generations run side by side ([P] from the 800-VM scenario's profile; a wrong guess only costs
# balance, never results).
GENERATION_COST = {name: g.cost for name, g in REGISTRY.items()}


def local_workers(sc: Scenario, n_generations: int, workers: int | None = None) -> int:
    """How many processes run the generations of a local-backend run side by side (1 = in this one)."""
    want = sc.run.workers if workers is None else workers
    if n_generations < 2 or want == 1:
        return 1
    if want == 0:
        if sc.vm_count() < sc.run.parallel_min_vms:
            return 1
        want = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if "fork" not in mp.get_all_start_methods():
        return 1
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return 1  # never fork a process that holds a Ray connection
    return max(1, min(want, n_generations))


def _one_local(sc: Scenario, gen: str | None, kill_actors: list[tuple[str, float]] | None,
               watch: Callable[[Callable[[], SimProgress]], None] | None = None) -> GenerationResult:
    be = LocalBackend([node_name(i) for i in range(sc.cluster.nodes)])
    try:
        return run_generation(sc, gen, be, kill_actors, **({"watch": watch} if watch else {}))
    finally:
        be.close()


def _sendable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that does not survive the pipe
        return RuntimeError(f"{type(exc).__name__}: {exc}")


# A generation worker's messages to the parent, on a queue: (kind, generation index, payload):
# "start" (payload None) when it starts; "sim" (payload: a SimProgress) while it runs, if the parent
# asked for progress within generations.
_PROGRESS_QUEUE: Any = None
_PROGRESS_INTERVAL: float | None = None


def _die_with_parent(parent_pid: int) -> None:
    """Pool initializer: the kernel kills this worker when its parent dies (Linux PR_SET_PDEATHSIG),
    so a killed run never leaves a worker behind (one blocked on a write to a dead parent held
    its memory for ever)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above: go now
        os._exit(1)


def _init_generation_worker(parent_pid: int, queue: Any, interval_s: float | None = None) -> None:
    global _PROGRESS_QUEUE, _PROGRESS_INTERVAL
    _die_with_parent(parent_pid)
    _PROGRESS_QUEUE = queue
    _PROGRESS_INTERVAL = interval_s


def _pool_generation(i: int, sc: Scenario, gen: str | None,
                     kill_actors: list[tuple[str, float]] | None) -> GenerationResult:
    """One generation in a pool worker; says when it starts and, if asked, where it is while it runs."""
    queue = _PROGRESS_QUEUE
    sampler = None
    if queue is not None:
        queue.put(("start", i, None))
        if _PROGRESS_INTERVAL is not None:
            sampler = _Sampler(lambda where: queue.put(("sim", i, where)), _PROGRESS_INTERVAL)
    try:
        return _one_local(sc, gen, kill_actors, sampler.watch if sampler else None)
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        raise _sendable(exc) from None
    finally:
        if sampler is not None:
            sampler.stop()


def _run_local_parallel(sc: Scenario, gens: list[str | None], n_workers: int,
                        kill_actors: list[tuple[str, float]] | None,
                        progress: Progress | None, sim_progress: SimProgressFn | None = None,
                        interval_s: float = PROGRESS_INTERVAL_S) -> list[GenerationResult]:
    """Generations side by side in a pool of forked processes (concurrent.futures), the longest
    first (the pool hands out work in the order it was submitted). Each generation is the same
    independent run as in a serial run, so the results are identical. Workers die with this
    process; "start" reaches `progress` from the worker through a queue, "done" when its result
    is here; each worker's readings of its simulation reach `sim_progress` the same way."""
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("fork")
    order = sorted(range(len(gens)), key=lambda i: -GENERATION_COST.get(gens[i] or "", 0))
    queue = ctx.Queue()

    def label(i: int) -> str:
        return gens[i] or "steady"

    def read_progress() -> None:
        while (msg := queue.get()) is not None:
            kind, i, payload = msg
            if kind == "start" and progress:
                progress(label(i), "start")
            elif kind == "sim" and sim_progress:
                sim_progress(label(i), payload)

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # a forked worker must not write this process's buffered output again
    results: dict[int, GenerationResult] = {}
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_init_generation_worker,
                               initargs=(os.getpid(), queue, interval_s if sim_progress else None))
    failed = False
    try:
        futures = {pool.submit(_pool_generation, i, sc, gens[i], kill_actors): i for i in order}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in sorted(done, key=lambda f: futures[f]):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    failed = True
                    raise RuntimeError(f"the worker process running {label(i)} died") from None
                except BaseException:
                    failed = True
                    raise
                if progress:
                    progress(label(i), "done")
    finally:
        if failed or len(results) < len(gens):
            for proc in list(getattr(pool, "_processes", {}).values()):  # no public way to stop them
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        queue.put(None)
        reader.join(timeout=10.0)  # (a worker stopped in the middle of a put may have left the queue stuck)
        queue.close()
        queue.cancel_join_thread()
    return [results[i] for i in range(len(gens))]


def run(sc: Scenario, backend: str | None = None, seed: int | None = None,
        generations: list[str] | None = None, progress: Progress | None = None,
        kill_actors: list[tuple[str, float]] | None = None, workers: int | None = None,
        sim_progress: SimProgressFn | None = None, progress_interval_s: float = PROGRESS_INTERVAL_S) -> RunResult:
    """Run every generation of the scenario (or the steady state without a backup section).

    workers (local backend): processes running generations side by side; None = `run.workers`
    of the scenario (0 = one per core for scenarios of `run.parallel_min_vms` VMs and more).
    sim_progress: called about every `progress_interval_s` of wall time with where each running
    generation is (simulated time, VMs done); reading it changes nothing in the results."""
    if seed is not None:
        sc = sc.model_copy(update={"seed": seed})
    backend = backend or sc.run.backend
    gens: list[str | None] = list(generations or (sc.backup.generations if sc.backup else [None]))
    wall0 = time.perf_counter()
    if backend == "local" and (n := local_workers(sc, len(gens), workers)) > 1:
        out = _run_local_parallel(sc, gens, n, kill_actors, progress, sim_progress, progress_interval_s)
        return RunResult(scenario=sc.name, seed=sc.seed, backend=backend, generations=out,
                         wall_s=time.perf_counter() - wall0)
    session = None
    nodes = [node_name(i) for i in range(sc.cluster.nodes)]
    if backend == "ray":
        session = RaySession(sc.run.ray_num_cpus, sc.run.ray_address)
    be: LocalBackend | RayBackend | None = None
    try:
        # Actors are created once and reset per generation (each generation gets a fresh cluster).
        be = (RayBackend(nodes, sc.run.ray_call_timeout_s, sc.run.ray_start_timeout_s) if backend == "ray"
              else LocalBackend(nodes))
        out = []
        for gen in gens:
            label = gen or "steady"
            if progress:
                progress(label, "start")
            be.revive_all()
            sampler = None
            if sim_progress is not None:
                sampler = _Sampler(lambda where, label=label: sim_progress(label, where), progress_interval_s)
            try:
                out.append(run_generation(sc, gen, be, kill_actors, **({"watch": sampler.watch} if sampler else {})))
            finally:
                if sampler is not None:
                    sampler.stop()
            if progress:
                progress(label, "done")
    finally:
        notes = list(getattr(be, "notes", []))
        if be is not None:
            be.close()
        if session is not None:
            session.close()
    return RunResult(scenario=sc.name, seed=sc.seed, backend=backend, generations=out,
                     wall_s=time.perf_counter() - wall0, notes=notes)
