"""Running a study's runs as Ray tasks: the cluster's CPUs kept busy, each run timed from its real
start (a start board on the driver's node) and cut at its deadline, a failed run submitted once
more."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cluster_sim.studies.progress import ProgressFn, StartFn, StudyProgress
from cluster_sim.studies.runs import ATTEMPTS, _error_row, _error_text, _timeout_text, execute_run
from cluster_sim.studies.spec import RunSpec, StudyPlan

MAX_RETRIES = 3  # Ray re-runs a task whose worker or node died this many times
# Runs handed to Ray ahead of the free CPUs. Ray keeps a leased worker busy only while its owner has
# more tasks queued for it; a short queue (CPUs + 2) made every finished run wait for the driver to
# notice and submit the next one, measured 10 % slower on 2 cores [P]
IN_FLIGHT_PER_CPU = 8
IN_FLIGHT_MIN = 64


class _StartBoard:
    """A Ray actor on the driver's node: each run tells it when it starts (run id, attempt, PID), and
    the driver reads the notes to time each run from its real start (not from when it was queued)."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, int, int]] = []

    def started(self, run_id: str, attempt: int, pid: int) -> None:
        self.notes.append((run_id, attempt, pid))

    def take(self) -> list[tuple[str, int, int]]:
        notes, self.notes = self.notes, []
        return notes


def _start_board(ray: Any) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(num_cpus=0, max_restarts=0)(_StartBoard).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)).remote()


def _run_on_ray(ray: Any, plan: StudyPlan, todo: list[RunSpec], state: StudyProgress,
                finished: Callable[[dict[str, Any]], None], progress: ProgressFn | None,
                on_start: StartFn | None = None) -> int:
    """Keep the cluster's CPUs busy (plus a queue) until every run has a row. A run is timed from
    its start; past its deadline it is cancelled; a run that failed or timed out is submitted once
    more, then recorded with its error."""
    inflight: dict[Any, tuple[RunSpec, int]] = {}  # ref -> (run, attempt)
    started: dict[Any, float] = {}  # ref -> when it (last) started running
    board = None
    try:
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(execute_run)
        board = _start_board(ray)
        scenario_refs: dict[int, Any] = {}
        pending: deque[tuple[RunSpec, int]] = deque((s, 1) for s in todo)
        cpus, checked = _cluster_cpus(ray), time.monotonic()
        read_board = 0.0

        def settle(ref: Any, row: dict[str, Any]) -> None:
            spec, attempt = inflight.pop(ref)
            started.pop(ref, None)
            if row.get("error") is None and row.get("sim_version") != plan.sim_version:
                row = {**row, "error": f"run by simulator {row.get('sim_version')}, but this study's is "
                                       f"{plan.sim_version}: install the same cluster_sim on every Ray node",
                       "valid": False}
            if row.get("error") and attempt < ATTEMPTS:
                state.retried += 1
                pending.appendleft((spec, attempt + 1))
                return
            state.running = min(len(inflight), cpus)
            finished(row)

        while pending or inflight:
            if time.monotonic() - checked > 2.0:  # nodes may join or leave
                cpus, checked = _cluster_cpus(ray), time.monotonic()
            while pending and len(inflight) < max(IN_FLIGHT_PER_CPU * cpus, IN_FLIGHT_MIN):
                spec, attempt = pending.popleft()
                if spec.point not in scenario_refs:
                    scenario_refs[spec.point] = ray.put(plan.scenarios[spec.point])
                ref = task.remote(spec, scenario_refs[spec.point], plan.name, plan.point_cells(spec.point),
                                  board, attempt)
                inflight[ref] = (spec, attempt)
            running = min(len(inflight), cpus)
            if running != state.running:
                state.running = running
                if progress:
                    progress(state, None)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            if time.monotonic() - read_board >= 0.5 or not ready:
                read_board = time.monotonic()
                by_key = {(s.run_id, a): ref for ref, (s, a) in inflight.items()}
                try:
                    notes = ray.get(board.take.remote(), timeout=60)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError,
                        getattr(ray.exceptions, "ActorUnavailableError", ray.exceptions.RayActorError)):
                    # the board went with its node (or hangs): a new one; the runs whose start
                    # notes it held are timed from now (never cut early, at worst a little late)
                    board = _start_board(ray)
                    notes = [(s.run_id, a, 0) for s, a in inflight.values()
                             if not any(inflight.get(r) == (s, a) for r in started)]
                for run_id, attempt, pid in notes:
                    ref = by_key.get((run_id, attempt))
                    if ref is not None:
                        started[ref] = time.monotonic()  # (a task Ray retried starts its clock again)
                        if on_start:
                            on_start(inflight[ref][0], attempt, pid)
                now = time.monotonic()
                for ref, t0 in list(started.items()):
                    spec, attempt = inflight[ref]
                    if now - t0 > plan.timeout_s(spec.point):
                        try:
                            ray.cancel(ref, force=True)
                        except Exception:  # noqa: BLE001 - its node may be gone; the run is dropped anyway
                            pass
                        settle(ref, _error_row(plan, spec, attempt, _timeout_text(now - t0, plan.timeout_s(spec.point))))
            if not ready:
                continue
            ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
            for ref in ready:
                spec, attempt = inflight[ref]
                try:
                    row = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task's retries are spent (node/worker died)
                    row = _error_row(plan, spec, attempt, _error_text(exc))
                settle(ref, row)
        return cpus
    finally:
        for ref in inflight:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if board is not None:
            try:
                ray.kill(board)
            except Exception:  # noqa: BLE001
                pass


def _cluster_cpus(ray: Any) -> int:
    try:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    except Exception:  # noqa: BLE001
        return 1
