"""`cluster_sim.sweep`: load studies, as one module you can also call.

The code lives in the package `cluster_sim.studies` (see its docstring for the study file and the
modules); this module re-exports its API (`cluster_sim.sweep.load_study`, `.run_study`, ...) and,
called, runs a study and returns its runs table: `cluster_sim.sweep("study.yaml")` is
`cluster_sim.studies.run_table("study.yaml")`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from cluster_sim.studies import *  # noqa: F403 - this module is the studies' API
from cluster_sim.studies import __all__, run_table  # noqa: F401


class _CallableModule(types.ModuleType):
    """`cluster_sim.sweep` is this module and, called, `run_table`: `cluster_sim.sweep("study.yaml")`."""

    def __call__(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        return run_table(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
