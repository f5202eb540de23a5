"""plots/: each metric against each grid axis, one line per generation with its 95 % interval as a
band, durations in hours, y axes from zero."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from cluster_sim.scenario import GENERATIONS
from cluster_sim.studies.spec import StudyPlan
from cluster_sim.studies.stats import CONFIDENCE, is_duration, metric_label


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_plots(plan: StudyPlan, agg: list[dict[str, Any]], folder: Path) -> list[Path]:
    """`plots/<metric>--<axis>.png`; with several axes, one panel per combination of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    colors = {g: f"C{i}" for i, g in enumerate(GENERATIONS)}
    for axis in plan.axes:
        others = [a for a in plan.axes if a != axis]
        xs_raw = list(dict.fromkeys(plan.point_cells(p)[axis] for p in range(len(plan.points))))
        numeric = plan.axis_kinds[axis] in ("int", "float")
        xpos = {x: (x if numeric else i) for i, x in enumerate(xs_raw)}
        logx = numeric and min(xs_raw) > 0 and max(xs_raw) / min(xs_raw) >= 50
        facets = list(dict.fromkeys(tuple(rec[a] for a in others) for rec in agg))
        for m in plan.metrics:
            scale = 3600.0 if is_duration(m) else 1.0  # durations in hours
            lowest = 0.0
            ncols = min(3, len(facets))
            nrows = math.ceil(len(facets) / ncols)
            fig_w, fig_h = max(7.0, 4.6 * ncols), 3.4 * nrows + 0.7
            fig, axs = plt.subplots(nrows, ncols, figsize=(fig_w, fig_h), squeeze=False, sharey=True)
            fig.subplots_adjust(left=0.85 / fig_w, right=1 - 0.2 / fig_w, bottom=0.6 / fig_h, top=1 - 0.75 / fig_h,
                                wspace=0.12, hspace=0.5)
            for k, facet in enumerate(facets):
                ax = axs[k // ncols][k % ncols]
                lines = 0
                for g in plan.generations:
                    pts = [rec for rec in agg if rec["generation"] == g and tuple(rec[a] for a in others) == facet]
                    pts.sort(key=lambda rec: xs_raw.index(rec[axis]))
                    x = [xpos[rec[axis]] for rec in pts]
                    y = [rec[f"{m}.mean"] / scale for rec in pts]
                    lo = [rec[f"{m}.ci95_low"] / scale for rec in pts]
                    hi = [rec[f"{m}.ci95_high"] / scale for rec in pts]
                    if all(math.isnan(v) for v in y):
                        continue
                    ax.plot(x, y, marker="o", color=colors.get(g), label=g)
                    ax.fill_between(x, lo, hi, color=colors.get(g), alpha=0.2, linewidth=0)
                    lowest = min([lowest, *(v for v in y + lo if not math.isnan(v))])
                    lines += 1
                if logx:
                    ax.set_xscale("log")
                if numeric and len(xs_raw) <= 12:
                    ax.set_xticks(xs_raw, [f"{v:g}" for v in xs_raw])
                    ax.minorticks_off()
                if not numeric:
                    ax.set_xticks(range(len(xs_raw)), [str(v) for v in xs_raw], rotation=30, ha="right")
                ax.set_xlabel(axis)
                if k % ncols == 0:
                    ax.set_ylabel(metric_label(m))
                if others:
                    ax.set_title(", ".join(f"{a}={v}" for a, v in zip(others, facet, strict=True)), fontsize=9)
                ax.grid(True, alpha=0.3)
                if lines:
                    ax.legend(fontsize=8)
                else:
                    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
            for k in range(len(facets), nrows * ncols):
                axs[k // ncols][k % ncols].set_visible(False)
            if lowest >= 0:  # the y axis starts at zero: a 1 % difference looks like one (the axes share y)
                axs[0][0].set_ylim(bottom=0)
            fig.suptitle(f"{plan.name}: {metric_label(m)} vs {axis}\n(mean and {CONFIDENCE:.0%} CI over "
                         f"{len(plan.seeds)} seeds; the y axis starts at 0)", fontsize=10)
            target = folder / f"{_safe(m)}--{_safe(axis)}.png"
            fig.savefig(target, dpi=90)
            plt.close(fig)
            written.append(target)
    return written
