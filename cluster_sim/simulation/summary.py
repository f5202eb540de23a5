"""What a generation's run is summed up as: summary.json (Summary), one row per VM (vms.csv) and per CSV."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from cluster_sim.backup.capture import expected_verdict
from cluster_sim.backup.job import BackupJob
from cluster_sim.backup.tracking import ChangeTracker
from cluster_sim.cluster.model import ClusterModel
from cluster_sim.cluster.topology import lower_bound_s
from cluster_sim.results import (
    CsvRow,
    JobSummary,
    Latency,
    MigrationDowntime,
    Migrations,
    NodeFailureOut,
    Outcomes,
    Summary,
    Verification,
    VmRow,
    r6,
)
from cluster_sim.scenario import Scenario


def _nan_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else r6(x)


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


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (numpy's "inverted_cdf": a value in the list, never an interpolation)."""
    return float(np.percentile(values, q, method="inverted_cdf"))


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
