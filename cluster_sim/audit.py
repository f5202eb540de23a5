"""The auditor: invariants checked after every run, reported in summary.json.

- every VM in the job has exactly one outcome, and it agrees with the generation's plan;
- every snapshot, checkpoint, mount, hot-add and redirected-access hold taken was released,
  or is counted in `leaks` (a leak without any node failure or injected fault is a violation);
- no LUN held more storage snapshots than `max_snapshots_per_lun`;
- no node was asked to act on a VM it does not run;
- simulated time never ran backwards in the trace;
- the job ended before `run.until_s`;
- every CSV is coordinated by a node the cluster holds up (if any node is up at the end);
- the migration counters add up: requested = completed + failed + in flight, refused = retried +
  refused too long + (waiting after a refusal, at most in flight), aborted <= requested;
- no job's window is shorter than its copy-time lower bound (bytes / narrowest copy pipe).
- what injected fault events left behind is counted against them (`account_fault_leaks`), and
  cannot exceed what has leaked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cluster_sim.cluster.topology import lower_bound_s
from cluster_sim.results import Audit, Leaks

if TYPE_CHECKING:
    from cluster_sim.backup.job import BackupJob
    from cluster_sim.cluster.model import ClusterModel

_EXPECTED = {
    "app": {"app_consistent", "crash_consistent"},  # ws2016 may fall back to a standard checkpoint
    "crash": {"crash_consistent"},
    "saved_state": {"saved_state"},
    "offline": {"offline"},
    "fail": {"failed"},
}


def count_leaks(cm: ClusterModel, node_state: dict[str, dict[str, dict]]) -> Leaks:  # type: ignore[type-arg]
    mounts = sum(sum(st.get("mounts", {}).values()) for st in node_state.values())
    hot = sum(v.get("hot_added", 0) for st in node_state.values() for v in st["vms"].values())
    return Leaks(
        snapshots=len(cm.array.leaked_snapshots()),
        checkpoints=len(cm.array.leaked_checkpoints()),
        mounts=mounts,
        redirected_holds=len(cm.csvs.leaked_holds()),
        hot_adds=hot,
    )


def audit(cm: ClusterModel, jobs: list[BackupJob], leaks: Leaks, faults_happened: bool,
          node_state: dict[str, dict] | None = None) -> Audit:  # type: ignore[type-arg]
    v: list[str] = []
    for node, st in sorted((node_state or {}).items()):
        if st.get("stray_ops"):
            v.append(f"{node}: {st['stray_ops']} operations named a VM the node does not run")
    for job in jobs:
        for name in sorted(job.records):
            rec = job.records[name]
            if rec.outcome is None:
                v.append(f"{name}: no outcome")
                continue
            if rec.double_outcomes:
                v.append(f"{name}: {rec.double_outcomes + 1} outcomes")
            if rec.outcome != "failed" and rec.outcome not in _EXPECTED[rec.plan.mode]:
                v.append(f"{name}: outcome {rec.outcome} but planned {rec.plan.mode}")
        if job.ended_s is None or not job.quiesced.triggered:
            v.append(f"job did not end before run.until_s = {cm.sc.run.until_s:g} s")
    leaked = {k: n for k, n in leaks.model_dump().items() if n}
    if leaked and not faults_happened:
        v.append("leaks without any fault: " + ", ".join(f"{k}={n}" for k, n in sorted(leaked.items())))
    limit = cm.sc.storage.array.max_snapshots_per_lun
    for lun in cm.array.luns.values():
        if lun.peak_existing > limit:
            v.append(f"{lun.csv}: {lun.peak_existing} snapshots exceed the limit of {limit}")
    if not cm.trace.monotonic():
        v.append("trace: simulated time ran backwards")
    v += _csv_coordinators(cm) + _migration_counters(cm) + _windows(cm, jobs)
    return Audit(ok=not v, violations=v)


def _csv_coordinators(cm: ClusterModel) -> list[str]:
    if not any(n in cm.alive for n in cm.up):
        return []  # no node up: nobody can coordinate (the CSVs move when one returns)
    return [f"{vol.name}: coordinated by {vol.coordinator}, which the cluster holds failed"
            for vol in cm.csvs if vol.coordinator not in cm.up]


def _migration_counters(cm: ClusterModel) -> list[str]:
    m = cm.migrations.stats
    v = []
    if m.requested != m.completed + m.failed + m.in_flight:
        v.append(f"migrations: requested {m.requested} != completed {m.completed} + failed {m.failed} "
                 f"+ in flight {m.in_flight}")
    waiting = m.refused - m.retried - m.failed_by["refused_too_long"]
    if not 0 <= waiting <= m.in_flight:
        v.append(f"migrations: refused {m.refused} - retried {m.retried} - refused too long "
                 f"{m.failed_by['refused_too_long']} = {waiting}, not between 0 and in flight {m.in_flight}")
    if m.failed != sum(m.failed_by.values()):
        v.append(f"migrations: failed {m.failed} != the sum over reasons {dict(m.failed_by)}")
    if not 0 <= m.aborted <= m.requested:
        v.append(f"migrations: aborted {m.aborted} > requested {m.requested}")
    return v


def _windows(cm: ClusterModel, jobs: list[BackupJob]) -> list[str]:
    v = []
    for job in jobs:
        if job.started_s is None:
            continue
        window = (job.ended_s if job.ended_s is not None else cm.env.now) - job.started_s
        bound = lower_bound_s(cm.sc, sum(rec.bytes_copied_mib for rec in job.records.values()))
        if window < bound - 1e-9 * max(1.0, bound):
            v.append(f"job {job.index}: window {window:.6f} s is below its copy-time lower bound {bound:.6f} s")
    return v


def account_fault_leaks(cm: ClusterModel, leaks: Leaks, node_state: dict[str, dict[str, Any]],
                        ) -> tuple[dict[str, Leaks] | None, Leaks, list[str]]:
    """The leaks injected fault events left behind (cluster/faults.py Ledger: a crashed backup
    application's snapshots, checkpoints, mounts, AutoRecovery disks and stale holds; a failed
    controller's snapshot deletions; ws2012's KB2878635 leak when a lost storage path moved a CSV
    during its snapshot). A leak caused by an injected fault is not a violation, but it is counted:
    returns (leaks per fault kind, or None if no fault left anything; the leaks no fault explains,
    which `audit` judges as before; violations: a fault cannot account for more than has leaked)."""
    if not cm.faults.ledger.items:
        return None, leaks, []
    per = cm.faults.ledger.counts(cm, node_state)
    total = leaks.model_dump()
    explained = {k: sum(c[k] for c in per.values()) for k in total}
    violations = [f"fault ledger: {explained[k]} {k} left by faults but only {total[k]} leaked"
                  for k in total if explained[k] > total[k]]
    unexplained = Leaks(**{k: max(0, total[k] - explained[k]) for k in total})
    return {cause: Leaks(**c) for cause, c in per.items()}, unexplained, violations
