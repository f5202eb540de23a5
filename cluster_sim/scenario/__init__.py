"""Scenario files: one strict pydantic model tree, loaded from YAML (see model.py for the fields
and their sources, load.py for loading and overrides, placement.py for where VMs start)."""

from cluster_sim.scenario.base import (
    CONFIG_VERSIONS,
    GENERATIONS,
    Fraction,
    Generation,
    NonNegFloat,
    PosFloat,
    ScenarioError,
)
from cluster_sim.scenario.errors import MAX_VALUE_CHARS, _problems_from_validation, _shown
from cluster_sim.scenario.events import (
    FAULT_KINDS,
    BackupServerCrash,
    ControllerFail,
    CrashNode,
    DrainNode,
    Event,
    LoadBalance,
    MigrateVm,
    Partition,
    RecoverNode,
    ResumeNode,
    SnapshotFault,
    StoragePathLoss,
    TargetOutage,
    TargetSlowdown,
)
from cluster_sim.scenario.load import (
    MAX_YAML_VALUES,
    apply_overrides,
    check_size,
    load_scenario,
    parse_override,
    read_override_file,
    read_yaml,
    scenario_from_dict,
)
from cluster_sim.scenario.model import (
    Array,
    Backup,
    Cluster,
    Disk,
    Migration,
    Networks,
    Run,
    Scenario,
    ScheduledRun,
    Storage,
    Template,
    Workload,
)
from cluster_sim.scenario.placement import (
    DiskSpec,
    VmSpec,
    csv_name,
    initial_coordinator,
    node_name,
    place_fleet,
)

__all__ = [
    "CONFIG_VERSIONS", "FAULT_KINDS", "GENERATIONS", "MAX_VALUE_CHARS", "MAX_YAML_VALUES", "Array", "Backup",
    "BackupServerCrash", "Cluster", "ControllerFail", "CrashNode", "Disk", "DiskSpec", "DrainNode", "Event",
    "Fraction", "Generation", "LoadBalance", "MigrateVm", "Migration", "Networks", "NonNegFloat", "Partition",
    "PosFloat", "RecoverNode", "ResumeNode", "Run", "Scenario", "ScenarioError", "ScheduledRun", "SnapshotFault",
    "Storage", "StoragePathLoss", "TargetOutage", "TargetSlowdown", "Template", "VmSpec", "Workload",
    "_problems_from_validation", "_shown", "apply_overrides", "check_size", "csv_name", "initial_coordinator",
    "load_scenario", "node_name", "parse_override", "place_fleet", "read_override_file", "read_yaml",
    "scenario_from_dict",
]
