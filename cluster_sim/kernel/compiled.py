"""The compiled parts of the kernel (Cython modules built by the install, setup.py), and the
switch to numpy's code: each compiled module does numpy's arithmetic in the same order, so a
run gives the same results to the bit either way (tests/test_latency_kernel.py)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NUMPY_ENV = "CLUSTER_SIM_NUMPY"  # set to 1: numpy's code even where the compiled modules are built


def compiled(module: str) -> ModuleType | None:
    """The compiled module, or None: numpy's code (no C compiler at install, or NUMPY_ENV set)."""
    if os.environ.get(NUMPY_ENV, "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
