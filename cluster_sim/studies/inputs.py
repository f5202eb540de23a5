"""Reading a study or plan file: the YAML mapping, the scenario it names (relative to it) with its
fixed overrides, its seeds, and every point it would run checked through the scenario machinery,
a problem blamed on the field it comes from."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cluster_sim.scenario import (
    Scenario,
    ScenarioError,
    apply_overrides,
    read_yaml,
    scenario_from_dict,
)
from cluster_sim.studies.columns import _canonical
from cluster_sim.studies.errors import StudyError


def read_mapping_file(path: Path, what: str, error: type[StudyError] = StudyError) -> dict[str, Any]:
    """A study or plan file's YAML, which must be a mapping (`what` says what it should hold)."""
    try:
        raw = read_yaml(path)
    except ScenarioError as exc:
        raise error(str(path), exc.problems) from None
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else type(raw).__name__
        raise error(str(path), [("", f"{what}; this file is {kind}")])
    return raw


def load_base_scenario(path: Path, scenario: str, overrides: dict[str, Any], purpose: str,
                       error: type[StudyError] = StudyError) -> tuple[Path, dict[str, Any], Scenario]:
    """The scenario a study (or plan) file names, relative to that file, with its fixed `overrides`:
    (scenario file, the data with the overrides applied, the checked scenario)."""
    fname = str(path)
    scenario_file = path.parent / scenario
    try:
        base = read_yaml(scenario_file)
        scenario_from_dict(base, str(scenario_file))
    except ScenarioError as exc:
        raise error(fname, [("scenario", str(exc))]) from None
    try:
        base = apply_overrides(base, list(overrides.items()), fname)
    except ScenarioError as exc:
        raise error(fname, [(f"overrides.{p}" if p else "overrides", r) for p, r in exc.problems]) from None
    try:
        base_sc = scenario_from_dict(base, fname)
    except ScenarioError as exc:
        raise error(fname, [(f"overrides: {_norm_path(p)}" if p else "overrides", r)
                            for p, r in exc.problems]) from None
    if base_sc.backup is None:
        raise error(fname, [("scenario", f"{scenario_file} has no backup section; {purpose}")])
    return scenario_file, base, base_sc


def parse_seeds(value: Any, first: int, fname: str, error: type[StudyError] = StudyError) -> list[int]:
    """`seeds:` of a study or plan file: a count N (the scenario's seed .. seed+N-1) or a list."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 100_000:
            raise error(fname, [("seeds", f"{value} runs per point: give 1 to 100000 (or a list of seeds)")])
        return [first + i for i in range(value)]
    if isinstance(value, list) and value:
        bad = [i for i, s in enumerate(value) if not (isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63)]
        if bad:
            raise error(fname, [(f"seeds[{bad[0]}]", f"{value[bad[0]]!r} is not a seed (an integer >= 0)")])
        if len(set(value)) != len(value):
            raise error(fname, [("seeds", "a seed is listed twice")])
        return list(value)
    raise error(fname, [("seeds", f"expected a number of seeds (>= 1) or a list of seeds, got {value!r}")])


def check_points(base: dict[str, Any], points: list[dict[str, Any]], fname: str,
                 prefix: str = "grid") -> tuple[list[Scenario], list[tuple[str, str]]]:
    """Apply every point (dotted path -> value) to the scenario data and validate it: the scenarios,
    and the problems (at most about 8), each blamed on `<prefix>.<path>` where a path is at fault."""
    scenarios: list[Scenario] = []
    problems: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for point in points:
        try:
            data = apply_overrides(base, list(point.items()), fname)
            scenarios.append(scenario_from_dict(data, fname))
            continue
        except ScenarioError as exc:
            found = exc.problems
        for p, reason in found:
            where, why = _blame(point, _norm_path(p) if p else "", reason, prefix)
            if (where, why) not in seen:
                seen.add((where, why))
                problems.append((where, why))
        if len(problems) >= 8:
            break
    return scenarios, problems


def _blame(point: dict[str, Any], problem_path: str, reason: str, prefix: str = "grid") -> tuple[str, str]:
    """Attribute a scenario problem at one grid point to the axis it comes from, if any."""
    for axis, value in point.items():
        if (problem_path == axis or problem_path.startswith(axis + ".") or axis.startswith(problem_path + ".")
                or (not problem_path and axis in reason)):
            if reason.startswith("unknown field"):
                return f"{prefix}.{axis}", f"{reason} (at scenario field {problem_path})" if problem_path != axis else reason
            if reason.endswith("is a value, not a section") or "is not an index of" in reason:
                return f"{prefix}.{axis}", reason
            return f"{prefix}.{axis}", f"value {_canonical(value)}: {reason}"
    return prefix, f"at point {_point_text(point)}: scenario field {problem_path or '(top)'}: {reason}"


def _norm_path(path: str) -> str:
    """`fleet[0].count` (how scenario errors name fields) -> `fleet.0.count` (how overrides do)."""
    return re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")


def _point_text(point: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{a}: {_canonical(v)}" for a, v in point.items()) + "}"
