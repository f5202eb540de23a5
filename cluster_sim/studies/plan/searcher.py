"""The Ray Tune / Optuna side of `cluster-sim plan` (imported only when a plan runs): the searcher
and the progress callback. Both are module-level classes because Tune pickles them into the
experiment (tuner.pkl, searcher state) and `Tuner.restore` must find them by name."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from cluster_sim.studies.plan.spec import PlanSpec
from cluster_sim.studies.plan.trials import TRIAL_KEY

TPE_STARTUP_TRIALS = 10  # [P] Optuna's default: random trials before TPE models the space
NSGA_POPULATION_MIN = 4  # [P] NSGA-II population: a fifth of the budget, within these bounds,
NSGA_POPULATION_MAX = 50  # so that a small budget still sees several generations (Optuna's default is 50)

# Listeners of the progress callback, by plan folder. The callback is pickled into the experiment
# and restored with it, so it holds only this key.
LISTENERS: dict[str, Callable[[dict[str, Any] | None, Any], None]] = {}


class PlanSearch(OptunaSearch):
    """OptunaSearch that tells Optuna each trial's constraint violations (`Trial.set_constraint`:
    Optuna's TPE and NSGA-II then rank every feasible trial above every infeasible one), marks
    trials whose runs failed as failed, and numbers trials with Optuna's trial number."""

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if params is None:
            return None
        return {**params, TRIAL_KEY: self._ot_trials[trial_id].number}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and result and trial_id not in self._completed_trials:
            if result.get("plan_error"):
                return super().on_trial_complete(trial_id, None, error=True)
            for i in range(sum(1 for k in result if k.startswith("violation_"))):
                ot_trial.set_constraint(f"c{i}", result[f"violation_{i}"])
        return super().on_trial_complete(trial_id, result, error)


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II guards a cache with a thread lock, which cannot be pickled; Tune pickles the
    searcher (and so its sampler) into the experiment. The lock is left out and made anew."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


class PlanProgressCallback(Callback):
    def __init__(self, key: str):
        self.key = key

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        fn = LISTENERS.get(self.key)
        if fn is not None:
            fn(trial.last_result, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        fn = LISTENERS.get(self.key)
        if fn is not None:
            fn(None, trial)


def make_searcher(spec: PlanSpec) -> ConcurrencyLimiter:
    """TPE (one objective) or NSGA-II (two), seeded with the plan's sampler_seed, at most
    `concurrency` trials at once."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {a: d.distribution() for a, d in spec.domains.items()}
    metric: Any = [f"objective_{i}" for i in range(len(spec.objectives))]
    mode: Any = ["min" if o.direction == "minimize" else "max" for o in spec.objectives]
    if spec.pareto:
        population = max(NSGA_POPULATION_MIN, min(NSGA_POPULATION_MAX, spec.trials // 5))
        sampler = PicklableNSGAIISampler(seed=spec.sampler_seed, population_size=population)
    else:
        sampler = optuna.samplers.TPESampler(seed=spec.sampler_seed, n_startup_trials=TPE_STARTUP_TRIALS)
        metric, mode = metric[0], mode[0]
    search = PlanSearch(space=space, metric=metric, mode=mode, sampler=sampler)
    return ConcurrencyLimiter(search, max_concurrent=spec.concurrency)
