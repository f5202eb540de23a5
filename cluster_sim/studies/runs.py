"""One run of a study or a plan (a point, a seed, a generation) on the local node backend, in this
process or as a Ray task: its row, or an error row that says why there is none."""

from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from cluster_sim import version
from cluster_sim.scenario import Scenario
from cluster_sim.studies.columns import flatten_summary
from cluster_sim.studies.spec import RunSpec, StudyPlan

ATTEMPTS = 2  # a run that fails or times out is run once more before its error is recorded


def _node_id() -> str:
    ray = sys.modules.get("ray")  # a Ray worker has imported it; a serial run need not
    try:
        if ray is not None and ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not inside Ray
        pass
    return "local"


_HEAP_FROZEN = False


def _freeze_long_lived_heap() -> None:
    """Once per process: collect, then move every object alive now (modules, Ray's worker state) out
    of the cyclic collector's reach (gc.freeze). A worker runs many short simulations; without this,
    each full collection (gen 2) rescans the whole process heap: measured 31 ms in a Ray worker
    (about 90,000 objects) against runs of 60 ms. A 48-run study (benchmarks/sweep_bench.py) ran
    6 % faster with it, serially and on Ray. Objects a run allocates are collected as usual; what
    was alive at the freeze is never collected by the cycle collector (a long-lived process's
    modules and caches)."""
    global _HEAP_FROZEN
    if not _HEAP_FROZEN:
        gc.collect()
        gc.freeze()
        _HEAP_FROZEN = True


def execute_run(spec: RunSpec, scenario: Scenario, study: str, cells: dict[str, Any],
                board: Any = None, attempt: int = 1) -> dict[str, Any]:
    """Run one (point, seed, generation) on the local node backend; never raises for a run's error.
    `board` (a Ray actor, see _StartBoard) is told when the run starts, so that the driver can time it."""
    from cluster_sim.simulation import run as run_sim

    if board is not None:
        board.started.remote(spec.run_id, attempt, os.getpid())
    _freeze_long_lived_heap()
    t0 = time.perf_counter()
    row: dict[str, Any] = {"run_id": spec.run_id, "study": study, **cells, "seed": spec.seed,
                           "generation": spec.generation, "node_id": _node_id(), "attempts": attempt,
                           "sim_version": version.sim_version()}
    try:
        result = run_sim(scenario, backend="local", seed=spec.seed, generations=[spec.generation])
        row.update(flatten_summary(result.generations[0].summary))
        row["error"] = None
        row["valid"] = bool(row.get("audit.ok"))  # an audit-failed run is recorded, not averaged
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded, the study goes on
        row["error"] = _error_text(exc)
        row["valid"] = False
    row["wall_s"] = time.perf_counter() - t0
    row["finished_at"] = time.time()
    return row


class RunTimeout(BaseException):
    """A run passed its wall-clock deadline (a BaseException: the run's own `except Exception` must
    not record it as the run's error)."""


def _error_row(plan: StudyPlan, spec: RunSpec, attempt: int, error: str) -> dict[str, Any]:
    return {"run_id": spec.run_id, "study": plan.name, **plan.point_cells(spec.point), "seed": spec.seed,
            "generation": spec.generation, "node_id": None, "wall_s": None, "finished_at": time.time(),
            "error": error, "valid": False, "attempts": attempt, "sim_version": None}


def _timeout_text(waited_s: float, deadline_s: float) -> str:
    return (f"RunTimeout: no result after {waited_s:.0f} s (deadline {deadline_s:g} s: run_timeout_s in the "
            f"study file or --run-timeout)")


def _serial_attempt(plan: StudyPlan, spec: RunSpec, attempt: int) -> dict[str, Any]:
    """One attempt in this process, cut at its deadline (SIGALRM; only in the main thread)."""
    import signal
    import threading

    deadline = plan.timeout_s(spec.point)
    cells = plan.point_cells(spec.point)
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return execute_run(spec, plan.scenarios[spec.point], plan.name, cells, attempt=attempt)

    def expire(_signum: int, _frame: Any) -> None:
        raise RunTimeout

    t0 = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        return execute_run(spec, plan.scenarios[spec.point], plan.name, cells, attempt=attempt)
    except RunTimeout:
        return _error_row(plan, spec, attempt, _timeout_text(time.monotonic() - t0, deadline))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def open_ray(num_cpus: int | None, address: str | None, error: type[Exception]) -> Any:
    """A RaySession for a study or a plan (the address checked first: fast, and an authentication
    failure explained); a Ray that cannot be started or joined raises `error` saying why."""
    from cluster_sim.simulation import RaySession, RayUnavailable

    where = f"--address {address}" if address else "ray.init"
    try:
        return RaySession(num_cpus=num_cpus or os.cpu_count() or 1, address=address)
    except RayUnavailable as exc:
        raise error(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - ray.init raises ConnectionError, ValueError, RuntimeError...
        raise error(f"{where}: cannot start or join Ray: {_error_text(exc)}") from None


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    if len(text) > 2000:
        text = text[:2000] + "..."
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno})"
    return text
