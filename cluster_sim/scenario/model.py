"""Scenario files: one strict pydantic model tree (cluster, storage, fleet, placement, backup,
events, run).

Units live in field names (`_s` seconds, `_gib`/`_mib` sizes, `_mib_s` rates). Every number
that comes from the domain has a default and a comment naming its source tag from
../shared/DOMAIN.md: [MS] Microsoft, [V] vendor, [seeds] the source articles, [P] our choice.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from cluster_sim.scenario import versions
from cluster_sim.scenario.base import (
    GENERATIONS,
    Generation,
    NonNegFloat,
    PosFloat,
    _Strict,
)
from cluster_sim.scenario.events import (
    BackupServerCrash,
    ControllerFail,
    Event,
    Partition,
    config_version_text,
)
from cluster_sim.scenario.placement import place_fleet


# --------------------------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------------------------
class Networks(_Strict):
    cluster_mib_s: PosFloat = 1150.0  # [P] 10 GbE cluster/CSV NIC per node
    live_migration_mib_s: PosFloat = 1150.0  # [P] 10 GbE live-migration NIC per node
    storage_fabric_mib_s_per_node: PosFloat = 1600.0  # [P] 2 x 8 Gb FC HBA ports per node
    backup_target_mib_s: PosFloat = 2000.0  # [P] ingest rate of the backup repository
    # [P] many clusters run CSV redirected I/O and live migration over the same NIC; then
    # both kinds of traffic share the cluster NIC's capacity (max-min).
    shared_cluster_and_lm: bool = False
    smb_hop_service_ms: PosFloat = 0.1  # [P] per network hop for redirected (SMB) I/O
    fabric_service_ms: PosFloat = 0.05  # [P] storage fabric hop (FC/iSCSI HBA and switch)


class Migration(_Strict):
    max_downtime_s: NonNegFloat = 0.3  # [P] allowed blackout of the stop-and-copy
    max_rounds: Annotated[int, Field(ge=1)] = 30  # [P] live pre-copy rounds at most
    max_total_factor: Annotated[float, Field(ge=1)] = 3.0  # [P] stop when 3x memory has been sent
    memory_working_set_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9  # [P] as SimGrid: dirtying capped at 90 % of memory
    resume_s: NonNegFloat = 0.05  # [P] resume on the destination after the last pages
    max_concurrent_per_node: Annotated[int, Field(ge=1)] = 2  # [MS] Hyper-V default: 2 simultaneous live migrations
    retry_s: PosFloat = 30.0  # [P] a refused migration is asked again after this
    max_wait_s: PosFloat = 7200.0  # [P] a migration refused for this long is given up (failed)


class Cluster(_Strict):
    nodes: Annotated[int, Field(ge=1, le=64)]  # [MS] a failover cluster has at most 64 nodes
    heartbeat_interval_s: PosFloat = 1.0  # [MS] SameSubnetDelay 1 s
    heartbeat_threshold: Annotated[int, Field(ge=1)] = 10  # [MS] 2016: 10 missed heartbeats
    networks: Networks = Networks()
    node_memory_gib: PosFloat = 768.0  # [P] host RAM available to VMs
    # [P] how often the driver sends node actors their queued operations and a heartbeat, and
    # collects the answers of the previous poll (liveness). A node actor that dies on its own (not
    # by a scheduled crash, whose time the cluster knows) is found one or two polls later. Each poll
    # costs a Ray call per node: 600 s keeps the Ray backend within 2x the local one (make bench).
    node_poll_interval_s: PosFloat = 600.0
    migration: Migration = Migration()
    failover_boot_s: NonNegFloat = 60.0  # [P] a failed-over VM boots on a survivor in this time
    imbalance_vms: Annotated[int, Field(ge=1)] = 2  # [P] load balancing moves VMs while counts differ by more
    # [MS] failover-cluster quorum: node majority; a disk or file-share witness adds one vote, which
    # breaks a 50/50 split in favour of the side holding it (see README "Fault events")
    witness: bool = False
    # [MS] cluster OS rolling upgrade: Windows Server 2012 R2 and 2016 nodes in one cluster, e.g.
    # {ws2012r2: [node-1, node-2], ws2016: [node-3, node-4]}; every node listed once. Absent: every
    # node runs the generation each run names (README "Mixed-version clusters").
    node_versions: dict[Literal["ws2012r2", "ws2016"], list[str]] | None = None
    # [MS] ws2012r2 until every node runs 2016 and the level is raised; default: the lowest node version
    functional_level: Literal["ws2012r2", "ws2016"] | None = None


# --------------------------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------------------------
class Array(_Strict):
    read_mib_s: PosFloat = 6000.0  # [P] mid-range array
    write_mib_s: PosFloat = 4000.0  # [P]
    iops: PosFloat = 200000.0  # [P]
    service_time_ms: PosFloat = 0.5  # [P] unloaded back-end I/O service time
    controllers: Annotated[int, Field(ge=1, le=16)] = 2  # [P] snapshot requests served one at a time per controller
    # A hardware shadow-copy set is committed as one consistency-group snapshot over its LUNs
    # [MS, V]; the array serves snapshot requests (set commits, deletions) one at a time per
    # controller [P], and a set waits for every controller that owns one of its LUNs.
    snapshot_commit_base_s: PosFloat = 0.5  # [P] DOMAIN.md: base 0.5 s
    snapshot_commit_per_lun_s: NonNegFloat = 0.05  # [P] a set's commit grows mildly with its LUNs
    snapshot_commit_per_pending_s: NonNegFloat = 0.25  # [P] cost per other request pending at the set's controllers
    snapshot_commit_per_existing_s: NonNegFloat = 0.02  # [P] cost per snapshot already on the LUN (commit, delete)
    # After the commit the snapshot LUNs are surfaced on the requesting host (LUN mapping,
    # plug-and-play arrival, rescan, mount: "one iSCSI LU is added for each source LU" [V Hitachi]);
    # seconds to tens of seconds, slower the more snapshot LUNs the host and the array have [P].
    snapshot_surface_base_s: NonNegFloat = 10.0  # [P] per set: rescan and mount on the requesting host
    snapshot_surface_per_lun_s: NonNegFloat = 4.0  # [P] per snapshot LUN surfaced (mapping, PnP arrival)
    snapshot_surface_per_host_lun_s: NonNegFloat = 0.5  # [P] per snapshot LUN already surfaced on that host
    snapshot_surface_per_array_snapshot_s: NonNegFloat = 0.05  # [P] per snapshot existing on the array
    # After the copy the shadow copy LUNs are removed on the host and deleted on the array [V].
    snapshot_remove_per_lun_s: NonNegFloat = 3.0  # [P] host side: dismount and surprise-removal of a LUN
    snapshot_delete_s: NonNegFloat = 2.0  # [P] array side, per LUN snapshot, queued at its controller
    max_snapshots_per_lun: Annotated[int, Field(ge=1)] = 255  # [V] NetApp-like 255, EqualLogic-like 512
    snapshot_style: Literal["cow", "row"] = "cow"  # [V] copy-on-write or redirect-on-write
    # Copy-on-write: a write to a block not yet copied since a snapshot costs 3 back-end I/Os [V];
    # the share of such writes starts at 1 for a new snapshot and decays as blocks are copied
    # (uniform writes: f(t) = exp(-w t / N)) [V]. Arrays that keep a COW area per snapshot copy a
    # block once per live snapshot that lacks it [V]; the others once (the newest snapshot decides).
    cow_per_snapshot: bool = False  # [V]
    cow_update_interval_s: PosFloat = 300.0  # [P] how often the decaying COW share is re-evaluated
    row_metadata_overhead: NonNegFloat = 0.1  # [V] redirect-on-write costs 1 op plus metadata
    copy_io_size_mib: PosFloat = 1.0  # [P] backup reads are large sequential I/Os


class Storage(_Strict):
    csvs: Annotated[int, Field(ge=1, le=1024)]
    array: Array = Array()
    block_size_mib: Annotated[float, Field(gt=0, le=4096)] = 64.0  # [P] data-plane block (RCT granularity)


# --------------------------------------------------------------------------------------------
# fleet
# --------------------------------------------------------------------------------------------
class Disk(_Strict):
    size_gib: PosFloat
    format: Literal["vhdx", "vhd", "vhds"] = "vhdx"
    used_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5  # [P] share of the disk holding data


class Workload(_Strict):
    read_iops: NonNegFloat = 100.0
    write_iops: NonNegFloat = 50.0
    io_size_kib: PosFloat = 8.0
    dirty_mib_s: NonNegFloat = 20.0  # memory dirtying rate (live migration)
    working_set_fraction: Annotated[float, Field(gt=0, le=1)] = 0.3  # share of disk the I/O touches
    # [V] distinct data a VM changes per day, as a share of its used data (3-10 % is typical for
    # incrementals): what an incremental copies and what an AVHDX holds; not the working set
    daily_change_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    write_skew_zipf_s: NonNegFloat = 1.0  # [P] Zipf exponent of block popularity within the working set
    guest_flush_interval_s: NonNegFloat = 5.0  # [P] guest write cache flushed this often (0: write-through)

    @model_validator(mode="after")
    def _daily_change_within_working_set(self) -> Workload:
        if self.daily_change_fraction > self.working_set_fraction:
            raise ValueError(
                f"daily_change_fraction: {self.daily_change_fraction:g} is more than working_set_fraction "
                f"({self.working_set_fraction:g}); a VM changes data only where its I/O goes")
        return self


class SharedDisk(_Strict):
    """A disk attached to every member of a guest cluster: a shared VHDX (2012 R2) or a VHD Set (2016)."""

    size_gib: PosFloat
    format: Literal["vhdx", "vhds"] = "vhds"
    used_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5  # [P] share of the disk holding data


class GuestCluster(_Strict):
    """The template's VMs form guest clusters of `size` consecutive VMs (`<template>-gc-01`, ...)."""

    size: Annotated[int, Field(ge=2, le=64)] = 2  # [MS] a failover cluster (here: of VMs) has at most 64 nodes
    shared_disks: Annotated[list[SharedDisk], Field(min_length=1, max_length=64)]


class Template(_Strict):
    template: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")]
    count: Annotated[int, Field(ge=1, le=100_000)]
    guest_os: Literal["windows", "linux"] = "windows"
    memory_gib: PosFloat = 8.0
    disks: Annotated[list[Disk], Field(min_length=1, max_length=64)]
    scsi_controller: bool = True
    integration_services: bool = True  # Linux IS / Windows IC installed at all
    integration_services_backup: bool = True  # the Backup (volume snapshot) service offered
    dynamic_disks: bool = False
    filesystem: Literal["ntfs", "refs", "fat32", "ext4", "xfs"] = "ntfs"
    config_version: str = "8.0"
    running: bool = True
    workload: Workload = Workload()
    guest_cluster: GuestCluster | None = None  # guest clusters on shared disks (README "Guest clusters")

    @field_validator("config_version", mode="before")
    @classmethod
    def _version_as_text(cls, v: Any) -> Any:
        # YAML reads 8.0 as a float; users write it unquoted, so accept it and keep the text.
        return config_version_text(v)


# --------------------------------------------------------------------------------------------
# backup (generations)
# --------------------------------------------------------------------------------------------
class ScheduledRun(_Strict):
    at_s: NonNegFloat
    mode: Literal["full", "incremental"] = "incremental"


class Backup(_Strict):
    generations: Annotated[list[Generation], Field(min_length=1)] = list(GENERATIONS)
    provider: Literal["hardware", "software"] = "hardware"
    vms_per_snapshot: Annotated[int, Field(ge=1, le=1000)] = 1  # [seeds, V] ws2012r2 batching
    concurrent_vms_per_node: Annotated[int, Field(ge=1, le=64)] = 3  # [MS] DPM default 3, up to 8
    retries: Annotated[int, Field(ge=0, le=100)] = 3  # [V] vendors retry failed VMs 3 times
    retry_wait_s: NonNegFloat = 600.0  # [MS] wait 10 min before a retry
    mode: Literal["full", "incremental"] = "full"
    start_s: NonNegFloat = 0.0
    hold_writes_limit_s: PosFloat = 10.0  # [MS] VSS_E_HOLD_WRITES_TIMEOUT past 10 s
    writer_freeze_limit_s: PosFloat = 60.0  # [MS] VSS_E_WRITERERROR_TIMEOUT past 60 s
    saved_state_downtime_s: NonNegFloat = 20.0  # [V] "several seconds" to under a minute; 20 s [P]
    allow_standard_checkpoint_fallback: bool = True  # [MS] ws2016 production -> standard checkpoint
    # [MS] host-level backup cannot take a shared VHDX (2012 R2 guest clusters; a VHD Set needs a 2016
    # host): the members are backed up without it (`skip_shared_disk`, as vendors do [P]) or fail
    shared_vhdx_policy: Literal["skip_shared_disk", "fail"] = "skip_shared_disk"
    linux_freeze_limit_s: PosFloat = 10.0  # [MS] Linux VSS daemon must answer within 10 s
    max_luns_per_set: Annotated[int, Field(ge=1, le=64)] = 64  # [MS] at most 64 volumes per shadow-copy set
    # ---- phase timings, all [P] unless tagged ----
    guest_freeze_median_s: PosFloat = 3.0  # [P] guest VSS prepare + freeze, lognormal median
    guest_freeze_sigma: NonNegFloat = 0.5  # [P] lognormal shape of the guest freeze time
    linux_freeze_median_s: PosFloat = 1.0  # [P] fsfreeze of all file systems
    checkpoint_create_s: PosFloat = 2.0  # [P] create an AVHDX differencing disk
    host_mount_base_s: PosFloat = 3.0  # [P] mount + revert + dismount one VHD on the host, alone
    host_mount_exponent: NonNegFloat = 0.5  # [seeds] per-disk cost grows as (disks mounted at once)^exp
    scsi_fixup_s: PosFloat = 6.0  # [P] hot-add AutoRecovery.vhdx, fix up in the guest, remove
    csv_owner_coordination_s: NonNegFloat = 1.0  # [seeds] snapshot node coordinates with the CSV owner
    csv_metadata_redirect_s: NonNegFloat = 2.0  # [MS] ws2012: snapshot creation briefly redirected
    copy_stream_mib_s: PosFloat = 400.0  # [P] one backup stream's read rate cap
    merge_mib_s: PosFloat = 200.0  # [P] AVHDX merge rate cap
    snapshot_set_wait_limit_s: PosFloat = 1800.0  # [P] wait for this node's VSS before VSS_E_SNAPSHOT_SET_IN_PROGRESS
    incremental_interval_s: PosFloat = 86400.0  # [P] time since the previous backup (nightly)
    ws2016_set_node: Literal["least_loaded", "first"] = "first"  # [P] node that takes the ws2016 snapshot set
    # [V] a VM in its snapshot critical section (guest freeze through host snapshot and
    # auto-recovery) refuses to move and the migration is retried; or the move is allowed and
    # the step notices; or the move aborts that VM's backup attempt.
    migration_policy: Literal["block_and_retry", "allow", "abort_backup"] = "block_and_retry"
    stale_backup_hold_s: NonNegFloat = 1800.0  # [MS] a dead ws2008r2 backup leaves the CSV redirected 30 min
    clear_stale_redirect: bool = False  # the backup app clears that state itself after a failover
    auto_recovery: bool = True  # ws2008r2/ws2012 host auto-recovery (revert to the guest snapshot)
    # [MS] after a host crash RCT's modified-region table (.mrt) still says which regions changed:
    # the next incremental copies whole regions (more bytes, no full). False: RCT is lost, a full.
    rct_survives_crash: bool = True
    rct_region_blocks: Annotated[int, Field(ge=1, le=1024)] = 4  # [P] data-plane blocks per .mrt region
    # [seeds, V] before 2016 vendors tracked changed blocks with a file-system filter driver on the
    # host (ws2008r2/ws2012/ws2012r2): incrementals copy changed blocks, but the filter adds write
    # overhead and its map is lost when the host crashes or the VM moves to another host (a full).
    change_tracking: Literal["vendor_filter", "none"] = "vendor_filter"
    change_tracking_write_overhead: NonNegFloat = 0.05  # [P] extra back-end write ops from the filter
    # [MS] KB4014317: on 2012 R2 (and earlier) clusters every node's Hyper-V writer enumerates its
    # VMs for each shadow-copy set (running or not); time grows with VMs, checkpoints and VHDs on the
    # node, the slowest node dominates; past writer_freeze_limit_s the writer times out. ws2016's
    # RCT-based backup no longer involves the writer for this: its one set pays the base only. Numbers [P].
    writer_enumeration_base_s: NonNegFloat = 0.5  # [P] per node, per set
    writer_enumeration_per_vm_s: NonNegFloat = 0.05  # [P] per VM on the node
    writer_enumeration_per_vhd_s: NonNegFloat = 0.02  # [P] per VHD attached to a VM on the node
    writer_enumeration_per_checkpoint_s: NonNegFloat = 0.1  # [P] per checkpoint (AVHDX) on the node
    verify: bool = True  # run the data plane and verify every backup by restoring it
    schedule: list[ScheduledRun] | None = None  # several jobs (e.g. a full, then nightly incrementals)
    # who decides grouping, order, concurrency, retries and reactions to the cluster during the job
    # (cluster_sim/backup/policy.py): None: the generation's built-in policy; else an import path
    # `package.module:Class` or an entry point of the `cluster_sim.policies` group [P]
    policy: Annotated[str, Field(min_length=1)] | None = None
    policy_args: dict[str, Any] = Field(default_factory=dict)  # checked by the policy's own Args model

    @model_validator(mode="after")
    def _schedule_in_order(self) -> Backup:
        if self.schedule:
            times = [r.at_s for r in self.schedule]
            if times != sorted(times):
                raise ValueError("backup.schedule: runs must be in time order")
        return self


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------
class Run(_Strict):
    backend: Literal["local", "ray"] = "local"
    until_s: PosFloat = 86400.0  # simulated-time horizon
    ray_num_cpus: Annotated[int, Field(ge=1)] | None = None  # default: the machine's cores
    ray_address: str | None = None  # connect to an existing Ray cluster instead of starting one
    steady_duration_s: PosFloat = 3600.0  # [P] length of a run without a backup section
    latency_rho_max: Annotated[float, Field(gt=0, lt=1)] = 0.98  # [P] utilisation cap in R = S/(1-rho)
    latency_series_step_s: NonNegFloat = 60.0  # [P] resolution of latency.csv (percentiles are exact)
    # local backend: processes running generations side by side (each generation is an independent
    # run, so the results are the same); 0 = one per core, used from parallel_min_vms VMs up
    workers: Annotated[int, Field(ge=0)] = 0
    parallel_min_vms: Annotated[int, Field(ge=0)] = 200  # [P] below this a fork costs more than it saves
    # Ray node backend: how long the driver waits for a node actor's answer; one that does not answer
    # in time is treated as dead (rebuilt from its log, or the run stops with exit code 3) [P]
    ray_call_timeout_s: PosFloat = 60.0
    ray_start_timeout_s: PosFloat = 300.0  # [P] for a new actor's first answer (Ray starts a worker process)


class Scenario(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=120)]
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 42
    cluster: Cluster
    storage: Storage
    fleet: Annotated[list[Template], Field(min_length=1)]
    placement: Literal["round_robin", "spread"] = "round_robin"
    backup: Backup | None = None
    events: list[Event] = Field(default_factory=list)
    run: Run = Run()

    @model_validator(mode="after")
    def _feasible(self) -> Scenario:
        names = [t.template for t in self.fleet]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"fleet: template names must be unique; repeated: {', '.join(dup)}")
        total = sum(t.count for t in self.fleet)
        if total > 100_000:
            raise ValueError(f"fleet: {total} VMs in all; at most 100000 are supported")
        for k, t in enumerate(self.fleet):
            if t.guest_cluster is not None and t.count % t.guest_cluster.size:
                raise ValueError(f"fleet[{k}].count: {t.count} VMs do not make whole guest clusters of "
                                 f"{t.guest_cluster.size} (guest_cluster.size)")
        versions.check(self)  # before placement: it puts VMs above configuration 5.0 on 2016 nodes
        n, c = self.cluster.nodes, self.storage.csvs
        if self.placement == "round_robin" and c < min(n, total):
            raise ValueError(
                f"storage.csvs: round_robin placement puts each VM's disks on a CSV coordinated by its "
                f"node, so every node that hosts a VM needs a CSV: {c} CSVs for {min(n, total)} such "
                f"nodes (use csvs >= {min(n, total)} or placement: spread)"
            )
        # Memory: VMs must fit on their nodes at placement time.

        per_node: dict[str, float] = {}
        for vm in place_fleet(self):
            per_node[vm.node] = per_node.get(vm.node, 0.0) + vm.memory_mib / 1024
        worst = max(per_node.items(), key=lambda kv: kv[1]) if per_node else None
        if worst and worst[1] > self.cluster.node_memory_gib:
            raise ValueError(
                f"fleet: placement cannot work: {worst[0]} would host {worst[1]:.0f} GiB of VM memory "
                f"but cluster.node_memory_gib is {self.cluster.node_memory_gib:g}"
            )
        self._check_events()
        return self

    def vm_names(self) -> set[str]:
        return {f"{t.template}-{k + 1:04d}" for t in self.fleet for k in range(t.count)}

    def _check_events(self) -> None:
        if not self.events:
            return
        vms = self.vm_names()
        nodes = {f"node-{i + 1}" for i in range(self.cluster.nodes)}
        csvs = {f"csv-{i + 1}" for i in range(self.storage.csvs)}
        for i, ev in enumerate(self.events):
            where = f"events[{i}]"
            if ev.at_s >= self.run.until_s:
                raise ValueError(f"{where}.at_s: {ev.at_s:g} s is not before run.until_s ({self.run.until_s:g} s)")
            for field, known, what in (("vm", vms, "VM"), ("node", nodes, "node"), ("to", nodes, "node"),
                                       ("csv", csvs, "CSV")):
                name = getattr(ev, field, None)
                if name is not None and name not in known:
                    raise ValueError(f"{where}.{field}: unknown {what} {name!r}")
        self._check_fault_events(nodes)

    def _check_fault_events(self, nodes: set[str]) -> None:
        """The fault events (README "Fault events"): names, and faults the model cannot take."""
        ctrl_down: list[tuple[int, float, float, int]] = []  # (index, from, to, controller)
        for i, ev in enumerate(self.events):
            where = f"events[{i}]"
            if isinstance(ev, Partition):
                for j, n in enumerate(ev.nodes):
                    if n not in nodes:
                        raise ValueError(f"{where}.nodes[{j}]: unknown node {n!r}")
                dup = sorted({n for n in ev.nodes if ev.nodes.count(n) > 1})
                if dup:
                    raise ValueError(f"{where}.nodes: {', '.join(dup)} listed twice")
                if len(set(ev.nodes)) >= len(nodes):
                    raise ValueError(f"{where}.nodes: every node of the cluster is listed; a partition cuts "
                                     f"the listed nodes off from the others, so leave at least one out")
            elif isinstance(ev, ControllerFail):
                k = self.storage.array.controllers
                if k < 2:
                    raise ValueError(f"{where}.controller: storage.array.controllers is 1; a controller "
                                     f"failure needs a second controller to take over its LUNs")
                if ev.controller > k:
                    raise ValueError(f"{where}.controller: controller {ev.controller} does not exist "
                                     f"(storage.array.controllers is {k})")
                ctrl_down.append((i, ev.at_s, ev.at_s + ev.duration_s, ev.controller))
            elif isinstance(ev, BackupServerCrash) and self.backup is None:
                raise ValueError(f"{where}: a backup_server_crash needs a backup section (there is no backup "
                                 f"application to crash)")
        for i, t0, _t1, _c in ctrl_down:
            down = {c for _j, a, b, c in ctrl_down if a <= t0 < b}
            if len(down) >= self.storage.array.controllers:
                raise ValueError(f"events[{i}]: at {t0:g} s every array controller would be down at once "
                                 f"(overlapping controller_fail events); the model needs one to serve the LUNs")

    def vm_count(self) -> int:
        return sum(t.count for t in self.fleet)


