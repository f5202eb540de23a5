"""Scheduled events of a scenario: live migrations, drains, crashes and recoveries, snapshot
faults, load balancing, and the fault events (partition, controller failure, storage path loss,
backup target outage and slowdown, backup server crash)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator

from cluster_sim.scenario.base import CONFIG_VERSIONS, NonNegFloat, PosFloat, _Strict


class _Event(_Strict):
    at_s: NonNegFloat


class MigrateVm(_Event):
    kind: Literal["migrate_vm"]
    vm: str
    to: str | None = None  # default: the least loaded other node


class DrainNode(_Event):
    kind: Literal["drain_node"]
    node: str
    max_concurrent: Annotated[int, Field(ge=1)] = 2  # [issue 4] 2 at a time per node by default


class CrashNode(_Event):
    kind: Literal["crash_node"]
    node: str


class RecoverNode(_Event):
    kind: Literal["recover_node"]
    node: str


class ResumeNode(_Event):
    kind: Literal["resume_node"]  # end of maintenance: a drained node takes VMs again
    node: str


class SnapshotFault(_Event):
    kind: Literal["snapshot_fault"]
    csv: str
    code: Literal["provider_veto", "out_of_space", "timeout"]
    count: Annotated[int, Field(ge=1, le=100_000)] = 1


class LoadBalance(_Event):
    kind: Literal["load_balance"]
    every_s: PosFloat = 300.0
    max_moves: Annotated[int, Field(ge=1)] = 4
    until_s: PosFloat | None = None


class Partition(_Event):
    """The cluster network is cut between `nodes` and the rest of the cluster for `duration_s`
    (both sides keep their own links: nodes on one side still reach each other). Quorum decides
    which side keeps running (README "Fault events")."""

    kind: Literal["partition"]
    nodes: Annotated[list[str], Field(min_length=1)]
    duration_s: PosFloat


class ControllerFail(_Event):
    """An array controller (1..storage.array.controllers) is down for `duration_s`: its LUNs fail
    over to the surviving controllers and fail back when it returns."""

    kind: Literal["controller_fail"]
    controller: Annotated[int, Field(ge=1, le=16)]
    duration_s: PosFloat


class StoragePathLoss(_Event):
    """One node loses its storage fabric (every HBA path) for `duration_s`."""

    kind: Literal["storage_path_loss"]
    node: str
    duration_s: PosFloat


class TargetOutage(_Event):
    """The backup target is unreachable for `duration_s`."""

    kind: Literal["target_outage"]
    duration_s: PosFloat


class TargetSlowdown(_Event):
    """The backup target ingests `factor` times its rate for `duration_s` (overlapping slowdowns multiply)."""

    kind: Literal["target_slowdown"]
    duration_s: PosFloat
    factor: Annotated[float, Field(gt=0, le=1)]


class BackupServerCrash(_Event):
    """The backup application dies (the running job with it); `restart_after_s` later it starts
    again and gives the VMs without an outcome a new attempt (never, if not given)."""

    kind: Literal["backup_server_crash"]
    restart_after_s: PosFloat | None = None


class UpgradeNode(_Event):
    """Cluster OS rolling upgrade of one node [MS]: the node is drained (its VMs live-migrate away,
    `max_concurrent` at a time), leaves the cluster, is reinstalled with Windows Server 2016 for
    `reinstall_s` and rejoins as a ws2016 node (it takes VMs again). Needs `cluster.node_versions`."""

    kind: Literal["upgrade_node"]
    node: str
    reinstall_s: NonNegFloat = 7200.0  # [P] clean install of 2016, roles, updates, rejoin: about 2 h
    max_concurrent: Annotated[int, Field(ge=1)] = 2  # [MS] Hyper-V default: 2 simultaneous live migrations


class RaiseFunctionalLevel(_Event):
    """Update-ClusterFunctionalLevel [MS]: every node runs ws2016; the cluster's functional level
    becomes ws2016 (irreversible). Needs `cluster.node_versions`."""

    kind: Literal["raise_functional_level"]


class UpgradeVmConfig(_Event):
    """Update-VMVersion [MS]: the VMs (`vms`: names, or every VM of `template`, or every VM when
    neither is given) are shut down, their configuration version is raised to `version`, and they start
    again (`downtime_s` each, one node's VMs `max_concurrent` at a time). Needs functional level
    ws2016 at that time."""

    kind: Literal["upgrade_vm_config"]
    version: str = "8.0"  # [MS] Windows Server 2016's configuration version
    vms: list[str] | None = None
    template: str | None = None
    downtime_s: NonNegFloat = 120.0  # [P] shut down, Update-VMVersion, boot
    max_concurrent: Annotated[int, Field(ge=1)] = 4  # [P] VMs upgraded at once per node

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, v: Any) -> Any:
        return config_version_text(v)


def config_version_text(v: Any) -> Any:
    """A configuration version as text: YAML reads 8.0 as a float, so accept it and keep the text."""
    if isinstance(v, float | int) and not isinstance(v, bool):
        v = f"{float(v):.1f}"
    if isinstance(v, str) and v not in CONFIG_VERSIONS:
        raise ValueError(f"unknown VM configuration version {v!r}; known: {', '.join(CONFIG_VERSIONS)}")
    return v


VERSION_KINDS = ("upgrade_node", "raise_functional_level", "upgrade_vm_config")

FAULT_KINDS = ("partition", "controller_fail", "storage_path_loss", "target_outage", "target_slowdown",
               "backup_server_crash")

Event = Annotated[
    MigrateVm | DrainNode | CrashNode | RecoverNode | ResumeNode | SnapshotFault | LoadBalance | Partition
    | ControllerFail | StoragePathLoss | TargetOutage | TargetSlowdown | BackupServerCrash | UpgradeNode
    | RaiseFunctionalLevel | UpgradeVmConfig,
    Field(discriminator="kind"),
]
_EVENT_KINDS = frozenset(get_args(m.model_fields["kind"].annotation)[0] for m in get_args(get_args(Event)[0]))


