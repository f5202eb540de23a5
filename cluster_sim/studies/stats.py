"""Aggregation over seeds: the mean and its Student-t 95 % confidence interval per (point,
generation) and metric, durations also in hours, written as aggregate.csv."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cluster_sim.studies.columns import _canonical, is_valid
from cluster_sim.studies.spec import StudyPlan
from cluster_sim.studies.store import _coerce

CONFIDENCE = 0.95


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df (Abramowitz & Stegun 26.7.3-4, exact)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    c2 = c * c
    if df % 2 == 1:
        if df == 1:
            return 2 * theta / math.pi
        term, total = 1.0, 1.0
        for k in range(2, df - 1, 2):  # 1 + 2/3 c^2 + 2*4/(3*5) c^4 + ... up to c^(df-3)
            term *= k / (k + 1) * c2
            total += term
        return 2 / math.pi * (theta + s * c * total)
    term, total = 1.0, 1.0
    for k in range(1, df - 2, 2):  # 1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2)
        term *= k / (k + 1) * c2
        total += term
    return s * total


@lru_cache(maxsize=4096)
def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value: P(|T_df| < t) = confidence (t_{(1+c)/2, df})."""
    if df < 1:
        raise ValueError("t_critical needs df >= 1")
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < confidence:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    sd: float
    low: float
    high: float


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> MeanCI:
    """Mean and Student-t interval; with fewer than two values the interval is NaN."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(xs)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan)
    if n == 1:
        return MeanCI(1, xs[0], math.nan, math.nan, math.nan)
    if min(xs) == max(xs):  # no spread: exactly that value (no rounding noise in the interval)
        return MeanCI(n, xs[0], 0.0, xs[0], xs[0])
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_critical(n - 1, confidence) * sd / math.sqrt(n)
    return MeanCI(n, mean, sd, mean - half, mean + half)


def aggregate(plan: StudyPlan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (point, generation): axes, generation, runs (valid ones), failed (errors), invalid
    (audit failed), and per metric `<m>.mean`, `<m>.ci95_low`, `<m>.ci95_high`, `<m>.sd`, `<m>.n` over the
    seeds of the valid runs: a failed or invalid run's numbers (e.g. a window cut at run.until_s) would
    pass for results."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        key = (_canonical([_coerce(r.get(a), plan.axis_kinds[a]) for a in plan.axes]), r.get("generation"))
        by_key.setdefault(key, []).append(r)
    out = []
    for p in range(len(plan.points)):
        cells = plan.point_cells(p)
        for g in plan.generations:
            group = by_key.get((_canonical([cells[a] for a in plan.axes]), g), [])
            ok = [r for r in group if is_valid(r)]
            failed = sum(1 for r in group if r.get("error"))
            rec: dict[str, Any] = {**cells, "generation": g, "runs": len(ok), "failed": failed,
                                   "invalid": len(group) - len(ok) - failed}
            for m in plan.metrics:
                ci = mean_ci(r.get(m) for r in ok)
                rec[f"{m}.mean"] = ci.mean
                rec[f"{m}.ci95_low"] = ci.low
                rec[f"{m}.ci95_high"] = ci.high
                rec[f"{m}.sd"] = ci.sd
                rec[f"{m}.n"] = ci.n
                if is_duration(m):  # the same in hours, as `run` shows durations
                    for k in HOUR_COLUMNS:
                        rec[f"{m}.{k}_h"] = rec[f"{m}.{k}"] / 3600
            out.append(rec)
    return out


HOUR_COLUMNS = ("mean", "ci95_low", "ci95_high")


def is_duration(metric: str) -> bool:
    """A metric in simulated seconds (its name has the unit `s`: backup_window_s, redirected_s_total),
    shown in hours; `wall_s` is the run's own wall-clock time and stays in seconds."""
    return metric != "wall_s" and "s" in metric.rsplit(".", 1)[-1].split("_")[1:]


def metric_label(metric: str) -> str:
    """A metric's name for a table or an axis: durations in hours (`backup_window (h)`)."""
    if not is_duration(metric):
        return metric
    head, _, last = metric.rpartition(".")
    name = "_".join(part for i, part in enumerate(last.split("_")) if not (i and part == "s"))
    return f"{head + '.' if head else ''}{name} (h)"


def write_aggregate_csv(path: Path, plan: StudyPlan, agg: list[dict[str, Any]]) -> None:
    import csv

    fields = [*plan.axes, "generation", "runs", "failed", "invalid"]
    for m in plan.metrics:
        fields += [f"{m}.mean", f"{m}.ci95_low", f"{m}.ci95_high", f"{m}.sd", f"{m}.n"]
        if is_duration(m):
            fields += [f"{m}.{k}_h" for k in HOUR_COLUMNS]

    def fmt(v: Any) -> Any:
        if isinstance(v, float):
            return "" if math.isnan(v) else repr(round(v, 6))
        return "" if v is None else v

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for rec in agg:
            w.writerow({k: fmt(rec.get(k)) for k in fields})
    os.replace(tmp, path)
