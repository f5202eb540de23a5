"""The settings each generation never reads (cluster_sim/backup/ignored.py), on which a study's
skipping of identical runs rests: every generation is run with a `backup` section that records each
field read, on the small shipped scenarios, every regression scenario and generated scenarios (random
fleets, faults, schedules, Linux guests, saved-state VMs), and must never read a field listed as
ignored by it. Then: changing such a field leaves summary.json byte-identical, and the effective
scenario's key tells such runs apart from the others."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import scenario_dicts

import cluster_sim
from cluster_sim.backup.ignored import IGNORED_BACKUP_FIELDS, effective_key, ignored_paths
from cluster_sim.results import summary_json
from cluster_sim.scenario import GENERATIONS, Backup, Scenario, scenario_from_dict
from cluster_sim.simulation import run as run_sim

ROOT = Path(__file__).resolve().parent.parent
SMALL_SHIPPED = [ROOT / "scenarios" / "small-4node.yaml", ROOT / "scenarios" / "10vm-2node.yaml"]
REGRESSIONS = sorted((ROOT / "scenarios" / "regressions").glob("*.yaml"))


class _Recording(Backup):
    """A backup section that notes the name of every field read."""

    def __getattribute__(self, name: str):  # type: ignore[no-untyped-def]
        if name in Backup.model_fields:
            object.__getattribute__(self, "__pydantic_private__")["_reads"].add(name)
        return super().__getattribute__(name)


def fields_read(sc: Scenario, generation: str) -> set[str]:
    rec = _Recording.model_construct(**{k: getattr(sc.backup, k) for k in Backup.model_fields})
    object.__setattr__(rec, "__pydantic_private__", {"_reads": set()})
    run_sim(sc.model_copy(update={"backup": rec}), backend="local", generations=[generation], workers=1)
    return set(rec.__pydantic_private__["_reads"])


def test_the_recorder_sees_what_a_generation_reads() -> None:  # (else every check below passes vacuously)
    sc = cluster_sim.load_scenario(SMALL_SHIPPED[0])
    reads = fields_read(sc, "ws2012r2")
    assert {"vms_per_snapshot", "scsi_fixup_s", "concurrent_vms_per_node", "checkpoint_create_s"} <= reads
    assert "vms_per_snapshot" not in fields_read(sc, "ws2016")


@pytest.mark.parametrize("path", SMALL_SHIPPED + REGRESSIONS, ids=lambda p: p.stem)
def test_no_generation_reads_a_setting_listed_as_ignored_by_it(path: Path) -> None:
    sc = cluster_sim.load_scenario(path)
    for gen in sc.backup.generations if sc.backup else []:
        assert not fields_read(sc, gen) & IGNORED_BACKUP_FIELDS[gen], gen


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=scenario_dicts(max_vms=24, max_generations=4), gen=st.sampled_from(GENERATIONS))
def test_no_generation_reads_a_setting_listed_as_ignored_by_it_on_generated_scenarios(data, gen) -> None:
    sc = scenario_from_dict(data)
    assert not fields_read(sc, gen) & IGNORED_BACKUP_FIELDS[gen]


def test_a_setting_a_generation_ignores_leaves_its_results_byte_identical() -> None:
    sc = cluster_sim.load_scenario(SMALL_SHIPPED[0])
    other = sc.model_copy(deep=True)
    other.backup.vms_per_snapshot = 7
    other.backup.writer_enumeration_per_vm_s = 3.0
    other.run.workers = 1
    a = run_sim(sc, backend="local", generations=["ws2016", "ws2012r2"])
    b = run_sim(other, backend="local", generations=["ws2016", "ws2012r2"])
    assert summary_json(a.generations[0].summary) == summary_json(b.generations[0].summary)  # ws2016
    assert effective_key(sc, "ws2016") == effective_key(other, "ws2016")
    # ws2012r2 reads both: other numbers, another key
    assert a.generations[1].summary.hw_snapshots_created != b.generations[1].summary.hw_snapshots_created
    assert effective_key(sc, "ws2012r2") != effective_key(other, "ws2012r2")


def test_ignored_paths_name_the_scenario_fields() -> None:
    assert "backup.vms_per_snapshot" in ignored_paths("ws2016")
    assert "backup.vms_per_snapshot" not in ignored_paths("ws2012r2")
    assert {"run.workers", "run.backend", "backup.generations"} <= ignored_paths("ws2012r2")
    for gen, names in IGNORED_BACKUP_FIELDS.items():
        assert names <= set(Backup.model_fields), gen
