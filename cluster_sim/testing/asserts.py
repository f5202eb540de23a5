"""Assertions that read like the auditor's invariants, on a run's results (a RunResult, one
GenerationResult, or a list of them). Each names the generation and the numbers that broke it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster_sim.results import GenerationResult

OUTCOMES = ("app_consistent", "crash_consistent", "saved_state", "offline", "failed")
# what each claimed outcome must restore to (data/verify.py EXPECTED)
RESTORES_AS = {"app_consistent": "app_consistent", "crash_consistent": "crash_consistent",
               "saved_state": "app_consistent", "offline": "app_consistent"}


def _generations(result: Any) -> list[GenerationResult]:
    if hasattr(result, "generations"):
        gens = list(result.generations)
    elif hasattr(result, "summary"):
        gens = [result]
    elif isinstance(result, Iterable):
        gens = [g for r in result for g in _generations(r)]
    else:
        raise TypeError(f"expected a RunResult or GenerationResult, got {type(result).__name__}")
    if not gens:
        raise AssertionError("the run has no generation to check")
    return gens


def _fail(problems: list[str], what: str) -> None:
    if problems:
        raise AssertionError(f"{what}:\n  " + "\n  ".join(problems))


def assert_no_leaks(result: Any, allow_fault_leaks: bool = True) -> None:
    """Every snapshot, checkpoint, mount, hot-add and redirected-access hold the backup took was
    released by the end. With `allow_fault_leaks` (default), what an injected fault left behind
    and the fault ledger accounts for (summary `fault_leaks`, e.g. a crashed backup server's
    snapshots) is not counted; everything else is."""
    problems = []
    for g in _generations(result):
        s = g.summary
        total = s.leaks.model_dump()
        explained = {k: 0 for k in total}
        if allow_fault_leaks and s.fault_leaks:
            for by_fault in s.fault_leaks.values():
                for k, n in by_fault.model_dump().items():
                    explained[k] += n
        left = {k: total[k] - explained[k] for k in total if total[k] - explained[k] > 0}
        if left:
            problems.append(f"{s.generation}: leaked " + ", ".join(f"{k}={n}" for k, n in sorted(left.items()))
                            + (f" (plus {sum(explained.values())} left by injected faults)" if any(explained.values())
                               else ""))
    _fail(problems, "leaks")


def assert_every_vm_has_one_outcome(result: Any) -> None:
    """Every VM of the job ended with exactly one outcome (and a reason if it failed), and the
    outcomes add up to the fleet."""
    problems = []
    for g in _generations(result):
        s = g.summary
        gen = s.generation
        if len(g.vms) != s.vm_count:
            problems.append(f"{gen}: {len(g.vms)} VM rows for {s.vm_count} VMs")
        for row in g.vms:
            if row.outcome not in OUTCOMES:
                problems.append(f"{gen}: {row.vm} has no outcome ({row.outcome!r})")
            elif row.outcome == "failed" and not row.reason:
                problems.append(f"{gen}: {row.vm} failed without a reason")
        counted = sum(s.outcomes.model_dump().values())
        if counted != s.vm_count:
            problems.append(f"{gen}: outcomes add up to {counted}, not {s.vm_count} VMs ({s.outcomes.model_dump()})")
        problems += [f"{gen}: {v}" for v in s.audit.violations if v.endswith(("no outcome", " outcomes"))]
    _fail(problems, "outcomes")


def assert_every_backup_restores(result: Any) -> None:
    """Every VM that did not fail restores from its backup to what its outcome claims (an
    application-consistent backup to the guest's flushed state, a crash-consistent one to a state
    the disk held): none torn, none with lost writes. Needs `backup.verify: true` (the default)."""
    problems = []
    for g in _generations(result):
        gen = g.summary.generation
        backed = [r for r in g.vms if r.outcome in RESTORES_AS]
        if backed and all(not r.verified for r in backed):
            problems.append(f"{gen}: nothing was verified (backup.verify is false?)")
            continue
        for r in backed:
            if r.verified != RESTORES_AS[r.outcome]:
                problems.append(f"{gen}: {r.vm} claimed {r.outcome} but restores as {r.verified or 'nothing'}")
    _fail(problems, "restores")


def assert_window_below(result: Any, limit_s: float | None = None, *, hours: float | None = None) -> None:
    """Every generation's backup window (first attempt to last outcome) is below the limit, given
    in seconds (`limit_s`) or `hours`; a job that never ended fails."""
    if (limit_s is None) == (hours is None):
        raise TypeError("assert_window_below: give the limit as limit_s or as hours (one of them)")
    limit = limit_s if limit_s is not None else float(hours) * 3600.0  # type: ignore[arg-type]
    problems = []
    for g in _generations(result):
        w = g.summary.backup_window_s
        if w is None or math.isnan(w):
            problems.append(f"{g.summary.generation}: the job never ended")
        elif not w < limit:
            problems.append(f"{g.summary.generation}: window {w:.1f} s ({w / 3600:.3f} h) is not below "
                            f"{limit:.1f} s ({limit / 3600:.3f} h)")
    _fail(problems, "backup window")
