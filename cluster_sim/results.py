"""Result models (pydantic) and writing them out.

`summary.json` must be byte-identical for the same scenario and seed on either backend, so it
holds only simulated quantities (no wall times, no backend name) and floats are rounded.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

OUTCOMES = ("app_consistent", "crash_consistent", "saved_state", "offline", "failed")


def r6(x: float) -> float:
    """Round for output; NaN (no data) stays NaN and is written as null."""
    return x if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Outcomes(_Out):
    app_consistent: int = 0
    crash_consistent: int = 0
    saved_state: int = 0
    offline: int = 0
    failed: int = 0


class Latency(_Out):
    baseline_p50: float | None = None
    baseline_p99: float | None = None
    backup_p50: float | None = None
    backup_p99: float | None = None


class Leaks(_Out):
    snapshots: int = 0
    checkpoints: int = 0
    mounts: int = 0
    redirected_holds: int = 0
    hot_adds: int = 0


class NodeFailureOut(_Out):
    node: str
    detected_s: float
    how: str
    vms_down: int


class Migrations(_Out):
    requested: int = 0
    completed: int = 0
    refused: int = 0
    retried: int = 0
    aborted: int = 0
    failed: int = 0


class MigrationDowntime(_Out):
    p50: float | None = None
    p99: float | None = None
    max: float | None = None


class Verification(_Out):
    restored: int = 0
    app_consistent: int = 0
    crash_consistent: int = 0
    torn: int = 0
    lost_writes: int = 0
    claim_mismatches: int = 0


class JobSummary(_Out):
    index: int
    mode: str
    start_s: float
    backup_window_s: float
    window_lower_bound_s: float  # this job's bytes over the copy path's bottleneck
    bytes_copied_mib: float
    full_copies: int  # VMs copied in full (in an incremental job: lost or missing change tracking)
    full_copy_reasons: dict[str, int]  # why, in an incremental job
    outcomes: Outcomes
    verification: Verification


class Audit(_Out):
    ok: bool
    violations: list[str] = Field(default_factory=list)


class CsvRow(_Out):
    csv: str
    coordinator: str
    vms: int
    read_mib_s: float
    write_mib_s: float
    redirected_s: float
    hw_snapshots: int = 0
    peak_snapshots: int = 0
    latency_ms_baseline: float | None = None  # mean I/O latency of the CSV's VMs before the backup
    latency_ms_backup: float | None = None  # ... and while it runs


class VmRow(_Out):
    vm: str
    template: str
    guest_os: str
    node: str
    csv: str
    generation: str
    outcome: str
    reason: str
    start_s: float | None
    end_s: float | None
    retries: int
    bytes_copied_mib: float
    downtime_s: float
    snapshot_id: str
    migrated_during_backup: bool
    nodes_visited: str
    verified: str
    copy_kind: str  # what the last copy read: full | incremental | incremental_regions
    copy_reason: str  # why a copy in an incremental job was not a plain incremental
    read_mib_s: float
    write_mib_s: float
    mean_latency_ms: float | None
    # mixed-version clusters: the mechanism that backed the VM up in the last job and why it is older
    # than the run's generation (e.g. rct_unavailable_functional_level); "" on a cluster of one version
    mechanism: str = ""
    mechanism_reason: str = ""


class MixedNight(_Out):
    """One job of a mixed-version cluster's schedule (the per-night table)."""

    job: int
    mode: str
    start_s: float
    functional_level: str  # when the job began
    nodes_ws2016: int
    nodes_ws2012r2: int
    nodes_upgrading: int  # out of the cluster for their reinstall
    backup_window_s: float
    bytes_copied_mib: float
    storage_snapshots: int  # hardware LUN snapshots the job's sets committed
    snapshot_sets: int
    vms_ws2016_path: int
    vms_ws2012r2_path: int
    vms_on_rct: int
    rct_share: float
    full_copies: int


class MixedSummary(_Out):
    """A mixed-version cluster (cluster.node_versions): versions at the end and per job."""

    node_versions: dict[str, int]  # nodes per Windows version at the end
    functional_level: str  # at the end
    nodes_upgraded: int
    vm_config_upgrades: int
    migrations_refused_config_version: int  # moves to a node that cannot run the VM's configuration
    mechanisms: dict[str, int]  # VMs per mechanism in the last job
    mechanism_reasons: dict[str, int]  # why VMs of the last job got an older mechanism
    nights: list[MixedNight]


class GuestClusters(_Out):
    """Guest clusters on shared disks (a template's guest_cluster), in the last job."""

    guest_clusters: int
    members: int
    members_without_shared_disk: int  # shared VHDX: backed up without it (shared_vhdx_policy: skip_shared_disk)
    members_failed: int  # ... or failed (shared_vhdx_policy: fail)
    vhds_checkpoints: int  # VHD Set checkpoints (one per guest cluster and round), each copied once
    shared_copied_mib: float
    restores_consistent: int  # every member's view of the shared disk from the same instant
    restores_inconsistent: int  # members from different instants (one retried in a later round)
    restores_incomplete: int  # a member without a backup


class Summary(_Out):
    scenario: str
    seed: int
    generation: str
    vm_count: int
    node_count: int
    csv_count: int
    backup_window_s: float  # the (first) job's window; with a schedule, the full's: see jobs
    window_lower_bound_s: float  # of that job
    full_window_s: float | None  # mean over the full jobs
    incremental_window_s: float | None  # mean over the incremental jobs
    hw_snapshots_created: int
    sw_snapshots_created: int
    snapshot_sets: int
    effective_vms_per_snapshot: float | None  # VM captures per hardware LUN snapshot
    hold_writes_overruns: int  # snapshot sets whose writes were held past hold_writes_limit_s
    writer_enumeration_s: float  # KB4014317 writer enumeration, summed over sets
    snapshot_surfacing_s: float  # snapshot LUNs surfaced on the requesting hosts, summed over sets
    hw_snapshots_deleted: int
    peak_pending_snapshots: int
    peak_snapshots_per_lun: int
    host_mounts: int
    scsi_hot_adds: int
    redirected_s_total: float
    redirected_s_max_csv: float
    outcomes: Outcomes
    failures_by_reason: dict[str, int]
    torn_undetected: int
    vm_downtime_s_total: float
    io_latency_ms: Latency
    bytes_copied_mib: float
    avhdx_vm_s: float
    leaks: Leaks
    node_failures: list[NodeFailureOut]
    migrations: Migrations
    migration_downtime_ms: MigrationDowntime
    migration_delay_s_total: float
    failovers: int
    vms_restarted: int
    vms_without_host: int  # failed over with no node left to run them (their AVHDX stays unmerged)
    retried_vms: int
    retries: int  # attempts after the first, all VMs and jobs together
    change_tracking_lost: dict[str, int]  # maps lost (host_crash, vm_moved)
    verification: Verification
    jobs: list[JobSummary]
    sim_end_s: float
    trace_events: int
    audit: Audit
    # what injected fault events left behind and was still not released at the end, per event kind
    # (cluster/faults.py Ledger); part of `leaks`. Absent when no fault left anything.
    fault_leaks: dict[str, Leaks] | None = None
    # a mixed-version cluster (cluster.node_versions); absent otherwise
    mixed: MixedSummary | None = None
    # guest clusters on shared disks; absent without them
    guest_clusters: GuestClusters | None = None


class GenerationResult(BaseModel):
    """One generation's run (or the steady run when the scenario has no backup section)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    summary: Summary
    vms: list[VmRow]
    csvs: list[CsvRow]
    latency_series: dict[str, list[float]]
    trace: Any = Field(default=None, exclude=True)  # kernel.trace.Trace
    # timeline.png, trace.perfetto.json and the error of drawing them, when they were drawn where
    # the generation ran (report/html.py draw_generation; the run command's finishing step)
    drawn: Any = Field(default=None, exclude=True)
    wall_s: float = 0.0
    round_trips: int = 0
    sim_events: int = 0


class RunResult(BaseModel):
    scenario: str
    seed: int
    backend: str
    generations: list[GenerationResult]
    wall_s: float = 0.0
    notes: list[str] = []  # what the machinery did about its own faults (e.g. a Ray actor rebuilt)

    def by_generation(self) -> dict[str, GenerationResult]:
        return {g.summary.generation: g for g in self.generations}

    def to_pandas(self, what: str = "generations"):  # type: ignore[no-untyped-def]
        """The run as a pandas DataFrame (pandas is an optional dependency: `pip install
        cluster_sim[pandas]`): `generations` (default), one row per generation with every number
        of summary.json as a dotted column (`io_latency_ms.backup_p99`, as in studies); `vms`,
        one row per VM and generation (the columns of vms.csv); `csvs`, one row per CSV and
        generation (the columns of csvs.csv)."""
        import pandas as pd

        if what == "generations":
            return pd.DataFrame([flat_summary(g.summary) for g in self.generations])
        if what in ("vms", "csvs"):
            rows = [{"generation": g.summary.generation, **r.model_dump(mode="json")}
                    for g in self.generations for r in getattr(g, what)]
            return pd.DataFrame(rows)
        raise ValueError(f"to_pandas: {what!r} is not one of 'generations', 'vms', 'csvs'")


def flat_summary(s: Summary) -> dict[str, Any]:
    """A summary as one flat mapping: nested numbers as dotted keys; lists and mappings (jobs,
    node failures, failures by reason) as JSON text."""
    out: dict[str, Any] = {}

    def walk(prefix: str, d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("failures_by_reason", "change_tracking_lost"):
                walk(f"{prefix}{k}.", v)
            elif isinstance(v, dict | list):
                out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
            else:
                out[f"{prefix}{k}"] = v

    walk("", s.model_dump(mode="json", exclude={k for k in ("mixed", "guest_clusters") if getattr(s, k) is None}))
    return out


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def summary_json(s: Summary) -> str:
    d = s.model_dump(mode="json")
    if d.get("fault_leaks") is None:
        d.pop("fault_leaks", None)  # only runs with fault events that left something carry it
    for key in ("mixed", "guest_clusters"):  # only mixed-version clusters, and guest clusters, carry them
        if d.get(key) is None:
            d.pop(key, None)
    return json.dumps(d, indent=2, sort_keys=False, allow_nan=False) + "\n"


def _write_rows(path: Path, rows: list[BaseModel]) -> None:
    if not rows:
        path.write_text("")
        return
    fields = list(type(rows[0]).model_fields)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            d = r.model_dump(mode="json")
            w.writerow({k: ("" if v is None else v) for k, v in d.items()})


def write_generation(g: GenerationResult, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(summary_json(g.summary))
    _write_rows(folder / "vms.csv", g.vms)
    _write_rows(folder / "csvs.csv", g.csvs)
    with open(folder / "latency.csv", "w", encoding="utf-8") as fh:
        fh.write("t_s,p50_ms,p99_ms\n")
        s = g.latency_series
        for t, a, b in zip(s.get("t_s", []), s.get("p50_ms", []), s.get("p99_ms", []), strict=True):
            fh.write(f"{t:.6f},{a:.6f},{b:.6f}\n")
    if g.trace is not None:
        g.trace.write_jsonl(folder / "trace.jsonl")
        g.trace.write_spans_jsonl(folder / "spans.jsonl")


def mixed_results(mixed: Any, cm: Any, jobs: list[Any], summary: Summary,
                  rows: list[VmRow]) -> tuple[Summary, list[VmRow]]:
    """A mixed-version cluster's run (backup/mixed.py MixedBackup): the `mixed` section of the summary
    and each VM's mechanism in vms.csv."""
    last = mixed.last(jobs)
    counts = cm.version_counts()
    refused = cm.migrations.stats.failed_by.get("config_version_not_supported", 0)
    out = MixedSummary(
        node_versions={k: v for k, v in counts.items() if k != "upgrading"},
        functional_level=cm.functional_level(),
        nodes_upgraded=cm.versions.nodes_upgraded,
        vm_config_upgrades=cm.versions.vm_upgrades,
        migrations_refused_config_version=refused,
        mechanisms=dict(sorted(Counter(g for g, _ in last.values()).items())),
        mechanism_reasons=dict(sorted(Counter(w for _, w in last.values() if w).items())),
        nights=[MixedNight(**n) for n in mixed.nights(jobs, summary.jobs)],
    )
    rows = [r.model_copy(update={"mechanism": last[r.vm][0], "mechanism_reason": last[r.vm][1]})
            if r.vm in last else r for r in rows]
    return summary.model_copy(update={"mixed": out}), rows


def guest_results(guest: Any, jobs: list[Any], summary: Summary,
                  rows: list[VmRow]) -> tuple[Summary, list[VmRow]]:
    """Guest clusters (backup/guest.py GuestClusters): the summary's section, and the reason of each
    member backed up without its shared disk in vms.csv."""
    if not jobs:
        return summary, rows
    last = jobs[-1]
    rows = [r.model_copy(update={"reason": guest.reason(last, r.vm)})
            if not r.reason and r.outcome != "failed" and guest.reason(last, r.vm) else r for r in rows]
    return summary.model_copy(update={"guest_clusters": GuestClusters(**guest.summary(last))}), rows


def scenario_yaml(sc: Any, what: str) -> str:
    """A scenario as YAML, headed by a comment saying what it is (`what`): `cluster-sim run` of this
    text reproduces the run byte for byte."""
    import yaml

    head = (f"# The effective scenario of this run ({what}).\n"
            f"# `cluster-sim run` of this file reproduces the results byte for byte.\n")
    return head + yaml.safe_dump(sc.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)
