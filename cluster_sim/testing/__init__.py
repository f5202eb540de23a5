"""Test your own backup logic with pytest: run a scenario (or a small generated cluster) with your
policy (cluster_sim/backup/policy.py) and check it with assertions that read like the auditor's
invariants. The pytest plugin (`cluster_sim.testing.plugin`, registered through the `pytest11`
entry point, so it is active wherever cluster_sim is installed) gives the same as fixtures:
`cluster_sim_run` and `cluster_sim_golden`, and the options `--cluster-sim-backend` and
`--cluster-sim-update-golden`.

    from cluster_sim.testing import assert_no_leaks, fault_matrix

    @fault_matrix(generations=["ws2012r2", "ws2016"])
    def test_my_policy_leaks_nothing_when_a_fault_hits(cluster_sim_run, fault_case):
        result = cluster_sim_run(policy="mypkg.policies:BiggestFirst", fault=fault_case)
        assert_no_leaks(result)
"""

from cluster_sim.testing.asserts import (
    assert_every_backup_restores,
    assert_every_vm_has_one_outcome,
    assert_no_leaks,
    assert_window_below,
)
from cluster_sim.testing.faults import FAULT_KINDS, PHASES, FaultCase, fault_cases, fault_matrix
from cluster_sim.testing.golden import compare_golden
from cluster_sim.testing.runs import run_cluster, small_cluster

__all__ = [
    "FAULT_KINDS", "PHASES", "FaultCase", "assert_every_backup_restores", "assert_every_vm_has_one_outcome",
    "assert_no_leaks", "assert_window_below", "compare_golden", "fault_cases", "fault_matrix", "run_cluster",
    "small_cluster",
]
