"""Runs: every generation of a scenario, one after another on the local or the Ray node backend, or
side by side in forked worker processes (concurrent.futures) on the local one."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from cluster_sim.backup.registry import cost_of
from cluster_sim.cluster.nodes import LocalBackend, RayBackend
from cluster_sim.results import (
    GenerationResult,
    RunResult,
)
from cluster_sim.scenario import Scenario
from cluster_sim.scenario.placement import node_name
from cluster_sim.simulation.assemble import (
    PROGRESS_INTERVAL_S,
    Progress,
    SimProgress,
    SimProgressFn,
    _Sampler,
    run_generation,
)
from cluster_sim.simulation.ray_session import RaySession


def longest_first(sc: Scenario, gens: list[str | None]) -> list[int]:
    """The generations' indices in the order a pool hands them out when they run side by side: the
    longest run first (`registry.cost_of` at the scenario's VMs and nodes [P]), so the shortest fills
    in at the end (a wrong guess only costs balance, never results)."""
    return sorted(range(len(gens)), key=lambda i: -cost_of(gens[i], sc.vm_count(), sc.cluster.nodes))


def local_workers(sc: Scenario, n_generations: int, workers: int | None = None) -> int:
    """How many processes run the generations of a local-backend run side by side (1 = in this one)."""
    want = sc.run.workers if workers is None else workers
    if n_generations < 2 or want == 1:
        return 1
    if want == 0:
        if sc.vm_count() < sc.run.parallel_min_vms:
            return 1
        want = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if "fork" not in mp.get_all_start_methods():
        return 1
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return 1  # never fork a process that holds a Ray connection
    return max(1, min(want, n_generations))


def _one_local(sc: Scenario, gen: str | None,
               watch: Callable[[Callable[[], SimProgress]], None] | None = None) -> GenerationResult:
    be = LocalBackend([node_name(i) for i in range(sc.cluster.nodes)])
    try:
        return run_generation(sc, gen, be, **({"watch": watch} if watch else {}))
    finally:
        be.close()


def _sendable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that does not survive the pipe
        return RuntimeError(f"{type(exc).__name__}: {exc}")


# A generation worker's messages to the parent, on a queue: (kind, generation index, payload):
# "start" (payload None) when it starts; "sim" (payload: a SimProgress) while it runs, if the parent
# asked for progress within generations.
_PROGRESS_QUEUE: Any = None
_PROGRESS_INTERVAL: float | None = None


def _die_with_parent(parent_pid: int) -> None:
    """Pool initializer: the kernel kills this worker when its parent dies (Linux PR_SET_PDEATHSIG),
    so a killed run never leaves a worker behind (one blocked on a write to a dead parent held
    its memory for ever)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above: go now
        os._exit(1)


# Generations of the run not finished yet, started or not (a count the workers share): the worker
# that runs the last one runs nothing more, no other generation runs beside it, and its process
# ends with the pool.
_UNFINISHED: Any = None


def _init_generation_worker(parent_pid: int, queue: Any, interval_s: float | None = None,
                            unfinished: Any = None) -> None:
    global _PROGRESS_QUEUE, _PROGRESS_INTERVAL, _UNFINISHED
    _die_with_parent(parent_pid)
    _PROGRESS_QUEUE = queue
    _PROGRESS_INTERVAL = interval_s
    _UNFINISHED = unfinished
    if unfinished is not None:
        from cluster_sim.kernel import collector

        # a generation's garbage is collected (kernel/collector.py) unless it is the run's last:
        # then the process's end frees it, and no other generation needs the memory meanwhile
        collector.collect_after = lambda: unfinished.value > 1


# What is done with a generation's result in the process that ran it, before the result is handed on
# (the run command writes the generation's folder and draws its pictures there: side by side when the
# generations run side by side). Picklable: a module-level function or a functools.partial of one.
Finish = Callable[[GenerationResult], GenerationResult]


def _pool_generation(i: int, sc: Scenario, gen: str | None, finish: Finish | None = None) -> GenerationResult:
    """One generation in a pool worker; says when it starts and, if asked, where it is while it runs."""
    queue = _PROGRESS_QUEUE
    sampler = None
    if queue is not None:
        queue.put(("start", i, None))
        if _PROGRESS_INTERVAL is not None:
            sampler = _Sampler(lambda where: queue.put(("sim", i, where)), _PROGRESS_INTERVAL)
    try:
        result = _one_local(sc, gen, sampler.watch if sampler else None)
        if sampler is not None:
            sampler.stop()
            sampler = None
        return finish(result) if finish is not None else result
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        raise _sendable(exc) from None
    finally:
        if sampler is not None:
            sampler.stop()
        if _UNFINISHED is not None:
            with _UNFINISHED.get_lock():
                _UNFINISHED.value -= 1


def _run_local_parallel(sc: Scenario, gens: list[str | None], n_workers: int,
                        progress: Progress | None, sim_progress: SimProgressFn | None = None,
                        interval_s: float = PROGRESS_INTERVAL_S, finish: Finish | None = None) -> list[GenerationResult]:
    """Generations side by side in a pool of forked processes (concurrent.futures), the longest
    first (the pool hands out work in the order it was submitted). Each generation is the same
    independent run as in a serial run, so the results are identical. Workers die with this
    process; "start" reaches `progress` from the worker through a queue, "done" when its result
    is here; each worker's readings of its simulation reach `sim_progress` the same way."""
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("fork")
    order = longest_first(sc, gens)
    queue = ctx.Queue()

    def label(i: int) -> str:
        return gens[i] or "steady"

    def read_progress() -> None:
        while (msg := queue.get()) is not None:
            kind, i, payload = msg
            if kind == "start" and progress:
                progress(label(i), "start")
            elif kind == "sim" and sim_progress:
                sim_progress(label(i), payload)

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # a forked worker must not write this process's buffered output again
    results: dict[int, GenerationResult] = {}
    unfinished = ctx.Value("i", len(gens))
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_init_generation_worker,
                               initargs=(os.getpid(), queue, interval_s if sim_progress else None, unfinished))
    failed = False
    try:
        futures = {pool.submit(_pool_generation, i, sc, gens[i], finish): i for i in order}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in sorted(done, key=lambda f: futures[f]):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    failed = True
                    raise RuntimeError(f"the worker process running {label(i)} died") from None
                except BaseException:
                    failed = True
                    raise
                if progress:
                    progress(label(i), "done")
    finally:
        if failed or len(results) < len(gens):
            for proc in list(getattr(pool, "_processes", {}).values()):  # no public way to stop them
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        queue.put(None)
        reader.join(timeout=10.0)  # (a worker stopped in the middle of a put may have left the queue stuck)
        queue.close()
        queue.cancel_join_thread()
    return [results[i] for i in range(len(gens))]


def run(sc: Scenario, backend: str | None = None, seed: int | None = None,
        generations: list[str] | None = None, progress: Progress | None = None,
        workers: int | None = None,
        sim_progress: SimProgressFn | None = None, progress_interval_s: float = PROGRESS_INTERVAL_S,
        finish: Finish | None = None) -> RunResult:
    """Run every generation of the scenario (or the steady state without a backup section).

    workers (local backend): processes running generations side by side; None = `run.workers`
    of the scenario (0 = one per core for scenarios of `run.parallel_min_vms` VMs and more).
    sim_progress: called about every `progress_interval_s` of wall time with where each running
    generation is (simulated time, VMs done); reading it changes nothing in the results.
    finish: applied to each generation's result in the process that ran it (a pool worker when
    generations run side by side), before "done" is said; what it returns is the run's result."""
    if seed is not None:
        sc = sc.model_copy(update={"seed": seed})
    backend = backend or sc.run.backend
    gens: list[str | None] = list(generations or (sc.backup.generations if sc.backup else [None]))
    wall0 = time.perf_counter()
    if backend == "local" and (n := local_workers(sc, len(gens), workers)) > 1:
        out = _run_local_parallel(sc, gens, n, progress, sim_progress, progress_interval_s, finish)
        return RunResult(scenario=sc.name, seed=sc.seed, backend=backend, generations=out,
                         wall_s=time.perf_counter() - wall0)
    session = None
    nodes = [node_name(i) for i in range(sc.cluster.nodes)]
    if backend == "ray":
        session = RaySession(sc.run.ray_num_cpus, sc.run.ray_address)
    be: LocalBackend | RayBackend | None = None
    try:
        # Actors are created once and reset per generation (each generation gets a fresh cluster).
        be = (RayBackend(nodes, sc.run.ray_call_timeout_s, sc.run.ray_start_timeout_s) if backend == "ray"
              else LocalBackend(nodes))
        out = []
        for gen in gens:
            label = gen or "steady"
            if progress:
                progress(label, "start")
            be.revive_all()
            sampler = None
            if sim_progress is not None:
                sampler = _Sampler(lambda where, label=label: sim_progress(label, where), progress_interval_s)
            try:
                one = run_generation(sc, gen, be, **({"watch": sampler.watch} if sampler else {}))
            finally:
                if sampler is not None:
                    sampler.stop()
            out.append(finish(one) if finish is not None else one)
            if progress:
                progress(label, "done")
    finally:
        notes = list(getattr(be, "notes", []))
        if be is not None:
            be.close()
        if session is not None:
            session.close()
    return RunResult(scenario=sc.name, seed=sc.seed, backend=backend, generations=out,
                     wall_s=time.perf_counter() - wall0, notes=notes)
