"""The auditor: invariants checked after every run, reported in summary.json.

- every VM in the job has exactly one outcome, and it agrees with the generation's plan;
- every snapshot, checkpoint, mount, hot-add and redirected-access hold taken was released,
  or is counted in `leaks` (a leak without any node failure or injected fault is a violation);
- no LUN held more storage snapshots than `max_snapshots_per_lun`;
- no node was asked to act on a VM it does not run;
- simulated time never ran backwards in the trace;
- the job ended before `run.until_s`;
- what injected fault events left behind is counted against them (`account_fault_leaks`), and
  cannot exceed what has leaked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    return Audit(ok=not v, violations=v)


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
