"""The scaled headline scenarios of the scaling benchmarks (benchmarks/scaling.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cluster_sim.scenario import load_scenario, scenario_from_dict

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from scaling import render, scaled_headline, without_comments  # noqa: E402


@pytest.mark.parametrize(("vms", "nodes", "controllers"), [(800, 8, 2), (1600, 16, 4), (8000, 64, 16), (10000, 64, 16)])
def test_scaled_headline_multiplies_the_fleet_storage_and_events(vms, nodes, controllers):
    head = load_scenario(ROOT / "scenarios" / "800vm-8node.yaml")
    sc = scenario_from_dict(scaled_headline(vms))
    k = vms / 800
    assert sc.vm_count() == vms
    assert sc.cluster.nodes == nodes and sc.storage.csvs == nodes
    # win-app is 560 of 800 in the headline: 70 % of the fleet at every size
    assert next(t.count for t in sc.fleet if t.template == "win-app") == round(560 * k)
    assert sc.storage.array.read_mib_s == pytest.approx(6000 * k)
    assert sc.storage.array.iops == pytest.approx(400000 * k)  # the headline array: 400,000 IOPS
    assert sc.storage.array.controllers == controllers
    assert sc.cluster.networks.backup_target_mib_s == pytest.approx(2000 * k)
    # node memory follows VMs per node: 1024 GiB for 100 VMs per node
    assert sc.cluster.node_memory_gib == pytest.approx(1024 * (vms / nodes) / 100)
    migrations = [e for e in sc.events if e.kind == "migrate_vm"]
    assert len(migrations) == round(24 * k)
    assert migrations[-1].at_s < 12 * 3600  # the same 12 hours
    assert [e.kind for e in sc.events if e.kind != "migrate_vm"] == [e.kind for e in head.events
                                                                    if e.kind != "migrate_vm"]


def test_shipped_8000vm_scenario_is_the_scaled_headline():
    # if the headline scenario changes, regenerate: python benchmarks/scaling.py 8000 > scenarios/8000vm-64node.yaml
    shipped = (ROOT / "scenarios" / "8000vm-64node.yaml").read_text(encoding="utf-8")
    assert without_comments(shipped) == render(scaled_headline(8000))


def test_the_two_core_floor_is_the_busiest_core_of_the_best_split_of_unsplittable_runs():
    from scale_bench import two_core_floor

    # 8000vm-64node's generations as measured side by side: {ws2012, ws2012r2} on one core
    # (21.1 + 21.0 = 42.1), {ws2008r2, ws2016} on the other (23.5 + 7.3 = 30.8)
    assert two_core_floor([23.5, 21.1, 21.0, 7.3]) == pytest.approx(42.1)
    assert two_core_floor([10.0, 10.0, 10.0, 10.0]) == 20.0
    assert two_core_floor([30.0, 1.0, 1.0, 1.0]) == 30.0  # one long run decides
    assert two_core_floor([5.0]) == 5.0
    assert two_core_floor([3.0, 3.0, 3.0], cores=3) == 3.0
