"""Loading scenario files: safe YAML (numbers like 1e9, duplicate keys refused, alias bombs
refused), `--set` overrides and override files, each problem blamed on where it came from.

A bad file raises `ScenarioError`, whose message names the file, the field path and the reason.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cluster_sim.scenario.base import ScenarioError
from cluster_sim.scenario.errors import _problems_from_validation
from cluster_sim.scenario.model import Scenario
from cluster_sim.scenario.policy_ref import check_policy


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b.c=value` -> ("a.b.c", YAML-typed value)."""
    if "=" not in text:
        raise ScenarioError("--set", [("", f"expected dotted.path=value, got {text!r}")])
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ScenarioError("--set", [("", f"empty field path in {text!r}")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError as exc:
        raise ScenarioError("--set", [(key, f"value {raw!r} is not valid YAML: {exc}")]) from exc
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[tuple[str, Any]], file: str | None) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for key, value in overrides:
        parts = key.split(".")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ScenarioError(file, [(key, f"{part!r} is not an index of a list of {len(node)}")])
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ScenarioError(file, [(key, f"{'.'.join(parts[:i])} is a value, not a section")])
    return data


def scenario_from_dict(data: Any, file: str | None = None) -> Scenario:
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ScenarioError(file, [("", f"a scenario is a YAML mapping of sections; this file is {kind}")])
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(file, _problems_from_validation(err)) from None
    if sc.backup is not None:  # the policy it names: importable, and its arguments valid
        problems = check_policy(sc.backup.policy, sc.backup.policy_args)
        if problems:
            raise ScenarioError(file, problems)
    return sc


class _Loader(yaml.SafeLoader):
    """Safe YAML with two fixes for scenario files: `1e9` is a number (YAML 1.1 wants `1.0e+9`),
    and a key given twice in one mapping is an error instead of the last one silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    __import__("re").compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        __import__("re").X,
    ),
    list("-+0123456789."),
)


MAX_YAML_VALUES = 1_000_000  # [P] a file whose aliases expand past this many values is refused


def _expanded_size_exceeds(data: Any, limit: int) -> bool:
    """Does `data`, with every alias expanded, hold more than `limit` values? (Counts with a stack
    and stops at the limit, so a YAML alias bomb costs milliseconds, not memory.)"""
    stack = [data]
    n = 0
    while stack:
        x = stack.pop()
        n += 1
        if n > limit:
            return True
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


def check_size(data: Any, file: str) -> Any:
    if _expanded_size_exceeds(data, MAX_YAML_VALUES):
        raise ScenarioError(file, [("", f"the file expands to more than {MAX_YAML_VALUES:,} values (YAML aliases "
                                        "repeating sections?): refused")])
    return data


def read_yaml(path: str | Path) -> Any:
    p = Path(path)
    if p.is_dir():
        raise ScenarioError(str(path), [("", "is a directory, not a YAML file")])
    if not p.is_file():
        raise ScenarioError(str(path), [("", "no such file")])
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), [("", f"cannot read: {exc}")]) from None
    try:
        return check_size(yaml.load(text, Loader=_Loader), str(path))  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(str(path), [("", f"YAML syntax error at {where}{problem}")]) from None


def _override_path(key: str) -> str:
    """`fleet.0.count` -> `fleet[0].count`, the form field paths take in messages."""
    out = ""
    for part in key.split("."):
        out += f"[{part}]" if part.isdigit() else ("." if out else "") + part
    return out


def _blame(err: ScenarioError, sets: list[tuple[str, str]]) -> ScenarioError:
    """Problems that come from a command-line override are blamed on it, not on the file."""
    if not sets or not err.problems:
        return err
    owners = []
    for path, _ in err.problems:
        owner = next((text for key, text in sets
                      if path == _override_path(key) or path.startswith(_override_path(key) + ".")
                      or path.startswith(_override_path(key) + "[")), None)
        owners.append(owner)
    if all(owners):
        return ScenarioError(f"{owners[0]} (on {err.file})", err.problems)
    return err


def read_override_file(path: str | Path) -> list[tuple[str, Any]]:
    """An override file (e.g. a plan's best.yaml): a YAML mapping of dotted scenario paths to values."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not data:
        kind = "empty" if not data else type(data).__name__
        raise ScenarioError(str(path), [("", "an override file is a YAML mapping of dotted scenario paths to "
                                             f"values (backup.vms_per_snapshot: 8); this file is {kind}")])
    for key in data:
        if not isinstance(key, str) or not key or any(not part.strip() for part in key.split(".")):
            raise ScenarioError(str(path), [(str(key), "not a dotted field path (e.g. backup.vms_per_snapshot)")])
    return list(data.items())


def load_scenario(path: str | Path, overrides: list[str] | None = None,
                  override_file: str | Path | None = None,
                  override_labels: list[str] | None = None) -> Scenario:
    """Load and validate a scenario file. `override_file` (a mapping of dotted paths to values) is
    applied first, then `overrides` (`dotted.path=value` strings), in order. A problem the override
    file brings in is blamed on that file; one an override brings in, on it (`--set key=value`, or
    the label given for it, e.g. `-g ws2019`)."""
    data = read_yaml(path)
    if override_file is not None:
        scenario_from_dict(data, str(path))  # the scenario's own problems are its own
        data = apply_overrides(data, read_override_file(override_file), str(override_file))
        scenario_from_dict(data, str(override_file))
    if not overrides:
        return scenario_from_dict(data, str(path))
    if not isinstance(data, dict):
        scenario_from_dict(data, str(path))
    parsed = [parse_override(o) for o in overrides]
    for (_key, value), text in zip(parsed, overrides, strict=True):
        check_size(value, f"--set {text}")
    data = apply_overrides(data, parsed, str(path))
    labels = override_labels or [f"--set {o}" for o in overrides]
    try:
        return scenario_from_dict(data, str(path))
    except ScenarioError as err:
        raise _blame(err, [(k, label) for (k, _), label in zip(parsed, labels, strict=True)]) from None
