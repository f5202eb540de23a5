"""How far a study is: counts of runs by state, and the ETA from the runs' sizes and the
measured times."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster_sim.studies.spec import RunSpec


@dataclass
class StudyProgress:
    total: int
    ok: int = 0
    failed: int = 0  # runs with an error (both attempts failed or timed out)
    invalid: int = 0  # runs whose auditor failed: recorded, left out of means and intervals
    running: int = 0
    skipped: int = 0  # recorded before this invocation (--resume)
    retried: int = 0  # runs attempted a second time (the first failed or timed out)
    identical: int = 0  # runs identical to another run (same effective scenario and seed): not run
    copied: int = 0  # ... whose numbers have been copied from that run so far
    eta_s: float | None = None  # wall seconds left, from the runs' sizes and the measured times

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.invalid

    def count(self, row: dict[str, Any]) -> None:
        if row.get("error"):
            self.failed += 1
        elif row.get("valid") is False or row.get("audit.ok") is False:
            self.invalid += 1
        else:
            self.ok += 1


ProgressFn = Callable[[StudyProgress, "dict[str, Any] | None"], None]  # (counts, the row just finished)


class Eta:
    """Wall time left in a study, from the work left and the pace so far. Each run's work is its size
    (`StudyPlan.run_size`: VMs x jobs x a generation's guessed cost), corrected per generation by what
    the finished runs measured (their wall seconds per unit of size); the pace is the wall seconds of
    finished runs per second elapsed (the parallelism actually got). Runs identical to another cost
    nothing. Before any run has finished there is no estimate."""

    def __init__(self, sizes: dict[str, tuple[float, str]]):
        self.left = dict(sizes)  # run_id -> (size, generation), not finished yet
        self.size_done: dict[str, float] = {}
        self.wall_done: dict[str, float] = {}

    def finished(self, run_id: str, wall_s: float | None) -> None:
        size, gen = self.left.pop(run_id, (0.0, ""))
        if wall_s is not None and wall_s > 0 and size > 0:
            self.size_done[gen] = self.size_done.get(gen, 0.0) + size
            self.wall_done[gen] = self.wall_done.get(gen, 0.0) + wall_s

    def eta_s(self, elapsed_s: float) -> float | None:
        wall = sum(self.wall_done.values())
        if wall <= 0 or elapsed_s <= 0:
            return None
        overall = wall / sum(self.size_done.values())
        work = sum(size * (self.wall_done[g] / self.size_done[g] if g in self.size_done else overall)
                   for size, g in self.left.values())
        return work / (wall / elapsed_s)


StartFn = Callable[[RunSpec, int, int], None]  # (run, attempt, PID of the process running it)
