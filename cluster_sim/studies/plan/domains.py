"""What a plan file searches and asks for: a domain per searched setting ({int: [lo, hi]},
{float: [lo, hi]}, {choice: [...]}), constraints (`metric <op> number`, parsed strictly: no
expressions) and objectives."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cluster_sim.studies.columns import (
    METRIC_KINDS,
    _axis_kind,
    _canonical,
    unknown_metric_reason,
)

OPS = ("<=", ">=", "==", "<", ">")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=False)


class _RangeDomain(_Strict):
    """{int: [lo, hi]} or {float: [lo, hi]}, optionally on a log scale."""

    _kind = ""
    _log_low_rule = ""  # what a log scale needs of the lower bound
    bounds: list  # (typed by the subclasses)
    log: bool = False

    @staticmethod
    def _log_ok(low: float) -> bool:
        return low > 0

    @model_validator(mode="after")
    def _ordered(self) -> _RangeDomain:
        lo, hi = self.bounds
        shown = f"{self._kind}: [{lo:g}, {hi:g}]"
        if lo >= hi:
            raise ValueError(f"{shown}: the lower bound must be below the upper bound "
                             "(a single value is a fixed setting: put it under `overrides:`)")
        if self.log and not self._log_ok(lo):
            raise ValueError(f"{shown}: a log scale needs a lower bound {self._log_low_rule}")
        return self


class _IntDomain(_RangeDomain):
    _kind, _log_low_rule = "int", "of at least 1"
    bounds: Annotated[list[int], Field(alias="int", min_length=2, max_length=2)]

    @staticmethod
    def _log_ok(low: float) -> bool:
        return low >= 1


class _FloatDomain(_RangeDomain):
    _kind, _log_low_rule = "float", "above 0"
    bounds: Annotated[list[float], Field(alias="float", min_length=2, max_length=2)]


class _ChoiceDomain(_Strict):
    choice: Annotated[list[Any], Field(min_length=1)]

    @model_validator(mode="after")
    def _scalars(self) -> _ChoiceDomain:
        for i, v in enumerate(self.choice):
            if not (v is None or isinstance(v, bool | int | str) or (isinstance(v, float) and math.isfinite(v))):
                raise ValueError(f"choice[{i}]: {_canonical(v)} is not a number, a string or a boolean")
        canon = [_canonical(v) for v in self.choice]
        if len(set(canon)) != len(canon):
            dup = sorted({c for c in canon if canon.count(c) > 1})
            raise ValueError(f"choice: value listed twice: {', '.join(dup)}")
        return self


_DOMAIN_MODELS: dict[str, type[_Strict]] = {"int": _IntDomain, "float": _FloatDomain, "choice": _ChoiceDomain}
DOMAIN_HELP = "a domain is {int: [lo, hi]}, {float: [lo, hi]} (either with log: true) or {choice: [a, b, ...]}"


@dataclass(frozen=True)
class Domain:
    """One searched setting: `kind` int (bounds inclusive), float, or choice."""

    path: str
    kind: Literal["int", "float", "choice"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        import optuna

        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def probe_values(self) -> list[Any]:
        """Values checked against the scenario before anything runs: the bounds, or every choice."""
        return [self.low, self.high] if self.kind != "choice" else list(self.choices)

    @property
    def cell_kind(self) -> str:
        return self.kind if self.kind != "choice" else _axis_kind(list(self.choices))

    def short(self) -> str:
        if self.kind == "choice":
            return "|".join(_canonical(c).strip('"') for c in self.choices)
        return f"{self.low:g}..{self.high:g}" + (" log" if self.log else "")

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(_canonical(c) for c in self.choices)
        return f"{self.kind} {self.low:g} .. {self.high:g}" + (" (log scale)" if self.log else "")


@dataclass(frozen=True)
class Constraint:
    """`metric op limit`, met by a trial when every seed meets it."""

    text: str
    metric: str
    op: str
    limit: float

    def met(self, value: float) -> bool:
        return {"<=": value <= self.limit, "<": value < self.limit, ">=": value >= self.limit,
                ">": value > self.limit, "==": value == self.limit}[self.op]

    @property
    def scale(self) -> float:
        return abs(self.limit) if self.limit != 0 else 1.0

    def slack(self, value: float) -> float:
        """How far inside the limit, as a fraction of it (negative: outside; 0 for a met equality)."""
        if self.op in ("<=", "<"):
            return (self.limit - value) / self.scale
        if self.op in (">=", ">"):
            return (value - self.limit) / self.scale
        return -abs(value - self.limit) / self.scale

    def violation(self, value: float) -> float:
        """For Optuna's constrained samplers: <= 0 when met, > 0 (growing with the excess) when not."""
        v = -self.slack(value)
        if not self.met(value):
            return max(v, 1e-9)  # a strict limit reached exactly is violated, by a hair
        return min(v, 0.0)


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: Literal["minimize", "maximize"]

    def key(self, value: float) -> float:
        """Smaller is better."""
        return value if self.direction == "minimize" else -value


_CONSTRAINT_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*(?P<op><=|>=|==|<|>)\s*"
    r"(?P<limit>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_constraint(text: str) -> Constraint:
    """`metric <op> number` (op one of <=, <, >=, >, ==), strictly: no expressions, no eval."""
    m = _CONSTRAINT_RE.match(text)
    if not m:
        hint = ""
        ops = re.findall(r"[<>=!]+", text)
        if not ops:
            hint = ": no comparison found"
        elif any(o not in OPS for o in ops) or len(ops) > 1:
            bad = next((o for o in ops if o not in OPS), ops[-1])
            hint = f": {bad!r} is not a comparison here (use one of {', '.join(OPS)}, once)"
        else:
            left, right = text.split(ops[0], 1)
            if not re.fullmatch(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*", right):
                hint = f": the limit {right.strip()!r} is not a number"
            elif not re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_.]*\s*", left):
                hint = f": {left.strip()!r} is not a metric name"
        raise ValueError(f"{text!r} is not `metric <op> number` with <op> one of {', '.join(OPS)}{hint}")
    metric, op, limit = m.group("metric"), m.group("op"), float(m.group("limit"))
    if metric not in METRIC_KINDS:
        raise ValueError(f"{text!r}: {unknown_metric_reason(metric)}")
    return Constraint(text=" ".join(text.split()), metric=metric, op=op, limit=limit)


def _parse_objective(raw: Any) -> tuple[list[Objective], list[tuple[str, str]]]:
    usage = ("expected {minimize: METRIC} or {maximize: METRIC}, or a list of two of them for a Pareto front; "
             f"got {_canonical(raw)}")
    items = raw if isinstance(raw, list) else [raw]
    if isinstance(raw, list) and not 1 <= len(raw) <= 2:
        return [], [("objective", f"a list of {len(raw)}: give one objective, or two for a Pareto front")]
    objectives: list[Objective] = []
    problems: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        where = f"objective[{i}]" if isinstance(raw, list) else "objective"
        if not (isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("minimize", "maximize")):
            problems.append((where, usage))
            continue
        direction, metric = next(iter(item.items()))
        if not isinstance(metric, str):
            problems.append((f"{where}.{direction}", f"{_canonical(metric)} is not a metric name"))
        elif metric not in METRIC_KINDS:
            problems.append((f"{where}.{direction}", unknown_metric_reason(metric)))
        elif METRIC_KINDS[metric] == "bool":
            problems.append((f"{where}.{direction}", f"{metric!r} is a yes/no value, not something to "
                                                     "minimise or maximise (make it a constraint)"))
        elif any(o.metric == metric for o in objectives):
            problems.append((f"{where}.{direction}", f"{metric!r} is already objective[0]"))
        else:
            objectives.append(Objective(metric, direction))
    return objectives, problems


def _parse_domain(path: str, raw: Any) -> tuple[Domain | None, list[tuple[str, str]]]:
    where = f"search.{path}"
    if not isinstance(raw, dict):
        return None, [(where, f"{_canonical(raw)}: {DOMAIN_HELP}")]
    kinds = [k for k in raw if k in _DOMAIN_MODELS]
    if len(kinds) != 1:
        what = "none of int, float, choice" if not kinds else f"both {' and '.join(kinds)}"
        return None, [(where, f"{_canonical(raw)} has {what}: {DOMAIN_HELP}")]
    kind = kinds[0]
    try:
        model = _DOMAIN_MODELS[kind].model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False):
            loc = [p for p in e.get("loc", ()) if not str(p).startswith("function-")]
            # (scenario._loc_to_path would drop "int" and "float": pydantic names union members so)
            p = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")
            value = _value_at(raw, p)
            r = e.get("msg", "invalid").removeprefix("Value error, ")
            if e.get("type") == "extra_forbidden":
                r = f"unknown field; {DOMAIN_HELP}"
            if not p and ": " in r:  # the model's own checks name their field: "int: [6, 1]: reason"
                p, r = r.split(": ", 1)
                value = _MISSING
            shown = f"{_canonical(value)}: " if value is not _MISSING else ""
            problems.append((f"{where}.{p}" if p else where, f"{shown}{r}"))
        return None, problems
    if isinstance(model, _ChoiceDomain):
        return Domain(path, "choice", choices=tuple(model.choice)), []
    lo, hi = model.bounds  # type: ignore[attr-defined]
    return Domain(path, kind, lo, hi, model.log), []  # type: ignore[arg-type, attr-defined]


_MISSING = object()


def _value_at(raw: Any, path: str) -> Any:
    """The value a validation error's path points at in the raw file (for the message)."""
    if not path:
        return _MISSING
    v = raw
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            idx = int(part[1:-1])
            if not isinstance(v, list) or idx >= len(v):
                return _MISSING
            v = v[idx]
        elif isinstance(v, dict) and part in v:
            v = v[part]
        else:
            return _MISSING
    return v
