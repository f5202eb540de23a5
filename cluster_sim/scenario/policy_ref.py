"""`backup.policy`: a reference to a backup policy class (cluster_sim/backup/policy.py), and its
arguments `backup.policy_args`, checked when a scenario is loaded so that a bad reference or a bad
argument is an error naming the field, the value and the reason (exit 2), not a failure half-way
through a run.

A reference is either an import path `package.module:Class` (the module must be importable: an
installed package, or a module on `sys.path`) or the name of an entry point of the
`cluster_sim.policies` group (what an installed package declares in its pyproject.toml:
`[project.entry-points."cluster_sim.policies"] biggest-first = "mypkg.policies:BiggestFirst"`).
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

ENTRY_POINT_GROUP = "cluster_sim.policies"
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class PolicyRefError(ValueError):
    """A policy reference or its arguments are wrong: (field path, reason) problems."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {r}" for p, r in problems))
        self.problems = problems


def policy_entry_points() -> dict[str, str]:
    """The policies installed packages declare: entry point name -> `module:Class`."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_policy_class(ref: str) -> type:
    """The policy class `ref` names. Raises PolicyRefError (field `backup.policy`) saying why not."""
    field = "backup.policy"
    target = ref
    if ":" not in ref:
        installed = policy_entry_points()
        if ref not in installed:
            near = difflib.get_close_matches(ref, list(installed), n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            known = ", ".join(sorted(installed)) or "none installed"
            raise PolicyRefError([(field, f"not an import path (package.module:Class) nor an entry point "
                                          f"of {ENTRY_POINT_GROUP} ({known}){hint} (got {ref!r})")])
        target = installed[ref]
    if not _IMPORT_PATH.fullmatch(target):
        raise PolicyRefError([(field, f"an import path is package.module:Class (got {target!r})")])
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyRefError([(field, f"cannot import module {module_name!r}: {exc} (got {ref!r})")]) from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while being imported
        raise PolicyRefError([(field, f"importing module {module_name!r} failed: {type(exc).__name__}: "
                                      f"{exc} (got {ref!r})")]) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            near = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise PolicyRefError([(field, f"module {module_name!r} has no {attr!r}{hint} (got {ref!r})")])
        obj = getattr(obj, part)
    _remember_code(module_name)
    if not (isinstance(obj, type) and getattr(obj, "__cluster_sim_policy__", False)):
        raise PolicyRefError([(field, f"{target} is not a subclass of cluster_sim.backup.policy.Policy "
                                      f"(got {ref!r})")])
    return obj


_CODE: dict[str, str] = {}  # top-level module -> its path, for every policy resolved in this process


def _remember_code(module_name: str) -> None:
    top = module_name.split(".")[0]
    if top == "cluster_sim" or top in _CODE:
        return
    mod = sys.modules.get(top)
    path = getattr(mod, "__file__", None)
    if path is None:
        return
    p = Path(path)
    _CODE[top] = str(p.parent if p.name == "__init__.py" else p)


def policy_code_paths() -> list[str]:
    """The code of the policies scenarios named in this process (each one's top-level package
    folder, or its module file), for a Ray runtime_env's `py_modules`: the workers of a Ray cluster
    this process joins get them as they get cluster_sim itself."""
    return [_CODE[k] for k in sorted(_CODE)]


def validate_policy_args(cls: type, args: dict[str, Any]) -> BaseModel:
    """`args` validated by the policy's own `Args` model. Raises PolicyRefError with a problem per
    bad argument (field `backup.policy_args.<name>`)."""
    model: type[BaseModel] = cls.Args  # type: ignore[attr-defined]
    try:
        return model.model_validate(args)
    except ValidationError as err:
        from cluster_sim.scenario.errors import _problems_from_validation

        problems = _problems_from_validation(err, root=model)
        name = getattr(cls, "__qualname__", str(cls))
        raise PolicyRefError([("backup.policy_args" + (f".{p}" if p else ""), f"{r} ({name}.Args)")
                              for p, r in problems]) from None


def check_policy(ref: str | None, args: dict[str, Any]) -> list[tuple[str, str]]:
    """The problems of a scenario's `backup.policy` and `backup.policy_args` (none: [])."""
    if ref is None:
        if args:
            return [("backup.policy_args", "given without backup.policy (the built-in policies take no "
                                           "arguments)")]
        return []
    try:
        validate_policy_args(resolve_policy_class(ref), args)
    except PolicyRefError as exc:
        return exc.problems
    return []
