"""Which simulator produced a result: the package version plus a hash of its source files.

`sim_version()` is `<package version>+<12 hex digits>`: the version installed (importlib.metadata,
so the same number pip shows) and the first 12 hex digits of a SHA-256 over every `*.py` file of
the `cluster_sim` package (relative path and bytes, in path order). An edited checkout that did not
bump the version still gets a new value, so study rows of two different simulators never mix on
`--resume`, and `run.json` says exactly which code wrote a results folder.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "cluster_sim"
__version__ = "0.1.0"  # what a source tree that was not installed calls itself (pyproject.toml's version)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # run from a source tree that was not installed
        return __version__


@lru_cache(maxsize=1)
def source_hash() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:12]


def sim_version() -> str:
    return f"{package_version()}+{source_hash()}"
