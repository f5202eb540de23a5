"""The columns of a run row (one simulation of a study or a plan): the numbers of summary.json,
dotted (`io_latency_ms.backup_p99`), with their kinds, and how a cell is written."""

from __future__ import annotations

import difflib
import json
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from cluster_sim.results import Summary


# Columns of a run row that come from the summary: dotted name -> kind (int, float, bool, str, json).
def _kind_of(annotation: Any) -> str | type[BaseModel]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _kind_of(args[0])
        return "json"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is str:
        return "str"
    return "json"


def _summary_columns(model: type[BaseModel] = Summary, prefix: str = "") -> list[tuple[str, str]]:
    cols: list[tuple[str, str]] = []
    for name, info in model.model_fields.items():
        kind = _kind_of(info.annotation)
        if isinstance(kind, type):
            cols += _summary_columns(kind, f"{prefix}{name}.")
        else:
            cols.append((f"{prefix}{name}", kind))
    return cols


# seed and generation are run-key columns already.
SUMMARY_COLUMNS = [(n, k) for n, k in _summary_columns() if n not in ("seed", "generation")]
RUN_COLUMNS = [("node_id", "str"), ("wall_s", "float"), ("finished_at", "float"), ("error", "str"),
               ("valid", "bool"), ("attempts", "int"), ("sim_version", "str")]
METRIC_KINDS = {n: k for n, k in SUMMARY_COLUMNS + [("wall_s", "float")] if k in ("int", "float", "bool")}


def flatten_summary(summary: Summary) -> dict[str, Any]:
    d = summary.model_dump(mode="json")
    row: dict[str, Any] = {}
    for name, kind in SUMMARY_COLUMNS:
        v: Any = d
        for part in name.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        row[name] = _canonical(v) if kind == "json" else v
    return row


def unknown_metric_reason(m: str) -> str:
    """Why `m` is not a metric, with the nearest known one."""
    near = difflib.get_close_matches(m, list(METRIC_KINDS), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else f"; known: {', '.join(METRIC_KINDS)}"
    return f"unknown metric {m!r} (a number in summary.json, dotted){hint}"


def is_valid(row: dict[str, Any]) -> bool:
    """A run that ended (no error) with a clean audit: it counts in means and intervals."""
    if row.get("error"):
        return False
    valid = row.get("valid")
    return bool(row.get("audit.ok")) if valid is None else bool(valid)


def _canonical(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _axis_kind(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float"
    if all(isinstance(v, str) for v in values):
        return "str"
    return "json"


def _cell(value: Any, kind: str) -> Any:
    if kind == "float":
        return float(value)
    if kind == "json":
        return _canonical(value)
    return value
