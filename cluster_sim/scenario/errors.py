"""Validation errors as (field path, reason) problems a user can act on: the path as written in
YAML, the bad value quoted, the nearest field suggested for a misspelt one."""

from __future__ import annotations

import difflib
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from cluster_sim.scenario.events import _EVENT_KINDS
from cluster_sim.scenario.model import Scenario


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in ("literal", "str", "int", "float", "bool"):
            continue  # pydantic's internal union/validator tags are not user field names
        elif isinstance(prev, int) and part in _EVENT_KINDS:
            pass  # a discriminated union's tag (an event's kind) is not a field either
        else:
            out += ("." if out else "") + str(part)
        prev = part
    return out


MAX_VALUE_CHARS = 80  # a bad value is quoted in an error message up to this many characters


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _unwrap_models(ann: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (through lists, optionals and unions)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list[type[BaseModel]] = []
    for a in get_args(ann):
        out += _unwrap_models(a)
    return out


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose field the last part of `loc` names (discriminated unions by their tag)."""
    cls: type[BaseModel] | None = root
    parts = list(loc[:-1])
    i = 0
    while i < len(parts) and cls is not None:
        part = parts[i]
        i += 1
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(str(part))
        if field is None:
            return None
        models = _unwrap_models(field.annotation)
        if len(models) == 1:
            cls = models[0]
        elif models:  # a discriminated union: the next part is the tag (e.g. an event's kind)
            while i < len(parts) and isinstance(parts[i], int):
                i += 1
            tag = parts[i] if i < len(parts) else None
            i += 1
            cls = next((m for m in models if _kind_tag(m) == tag), None)
        else:
            return None
    return cls


def _kind_tag(model: type[BaseModel]) -> Any:
    f = model.model_fields.get("kind")
    args = get_args(f.annotation) if f is not None else ()
    return args[0] if args else None


def _problems_from_validation(err: ValidationError, root: type[BaseModel] | None = None,
                              quote_values: bool = True) -> list[tuple[str, str]]:
    """(field path, reason) per problem; the reason quotes the bad value (cut to 80 characters;
    `quote_values=False` leaves that to the caller) and, for an unknown field, suggests the nearest
    known one."""
    root = root or Scenario
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(e.get("loc", ()))
        path = _loc_to_path(loc)
        msg = e.get("msg", "invalid")
        kind = e.get("type")
        value = e.get("input")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            # model-level checks name their own field path as "path: reason"
            if not path and ": " in msg and " " not in msg.split(": ", 1)[0]:
                path, msg = msg.split(": ", 1)
        if kind == "extra_forbidden":
            msg = "unknown field"
            model = _model_at(root, loc)
            near = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6) if model else []
            if near:
                msg += f" (did you mean {near[0]!r}?)"
            msg += "; see the scenario reference in README.md" if root is Scenario else ""
        elif quote_values and kind != "missing" and not isinstance(value, dict | list) and "got " not in msg:
            msg += f" (got {_shown(value)})"
        problems.append((path, msg))
    return problems


