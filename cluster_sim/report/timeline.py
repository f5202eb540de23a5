"""`timeline.png`: one generation's backup drawn over simulated time (matplotlib, Agg).

Top: one swim lane per node. With few VMs (at most `PER_VM_LIMIT`) each VM gets its own lane
under its node, with its phases as coloured spans, failed attempts (x), its outcome (dot at
the end), live migrations (arrow) and failover restarts (^). With more VMs each node gets a
small chart of how many VMs are in each phase over time (mean per time bin, stacked) and, on
the right axis, how many of its VMs still have no outcome. Node crashes shade the node's lane
from the crash until the node is back.

Below: per-CSV redirected access, pending and existing storage snapshots, VM I/O latency p50/p99.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# a Figure of our own, not pyplot's: savefig draws it with Agg, and pyplot's import (backends,
# figure manager) would add about 0.03 s to every command that draws
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from cluster_sim.report.spans import (
    ACTIVE,
    OUTCOME_COLOURS,
    PHASES,
    Timeline,
    redirected_intervals,
)
from cluster_sim.report.timeline_lanes import (
    BAND_GAP,
    _draw_aggregate,
    _draw_per_vm,
    _vm_lanes,
    per_vm_lanes,
)
from cluster_sim.report.timeline_style import (
    CRASH_COLOUR,
    DPI,
    FONT_HEAD,
    FONT_LABEL,
    FONT_SMALL,
    FONT_TITLE,
    HOLD_COLOURS,
    LEFT,
    RETRY_LINE,
    RIGHT,
    WIDTH_IN,
    _bars,
    _fmt_s,
    _scale_labels,
    time_unit,
)

TITLE_LINE_CHARS = 95  # [P] characters of the title (bold, FONT_HEAD) that fit the width
LEGEND_COLS = 4


def title_of(tl: Timeline) -> str:
    """Two lines: the run and its window; then the headline counts (storage snapshots, sets,
    hold-writes overruns, retries) and the outcomes."""
    s = tl.summary
    o = s.get("outcomes") or {}
    head = f"{s.get('scenario', '')} - {tl.generation}: {s.get('vm_count', len(tl.vms))} VMs on " \
           f"{s.get('node_count', len(tl.nodes))} nodes, {s.get('csv_count', len(tl.csvs))} CSVs"
    if not tl.jobs and not tl.spans:
        return head + " (no backup)"
    counts = [f"{_plural(s.get('hw_snapshots_created'), 'storage snapshot')} in {_plural(s.get('snapshot_sets'), 'set')}"]
    if s.get("hold_writes_overruns"):
        counts.append(_plural(s["hold_writes_overruns"], "hold-writes overrun"))
    if s.get("retries"):
        counts.append(_plural(s["retries"], "retry", "retries"))
    outs = ", ".join(f"{v:,} {k.replace('_', '-')}" for k, v in o.items() if v)
    tail = f"{', '.join(counts)}; {outs}"
    if len(tail) > TITLE_LINE_CHARS:
        tail = f"{', '.join(counts)}\n{outs}"
    return f"{head}; backup window {_fmt_s(float(s.get('backup_window_s') or 0.0))}\n{tail}"


def _plural(n: object, one: str, many: str | None = None) -> str:
    """`1 set`, `8 sets` (`? sets` for a count summary.json lacks)."""
    return f"{n:,} {one if n == 1 else many or one + 's'}" if isinstance(n, int) else f"? {many or one + 's'}"


def _legend_handles(per_vm: bool) -> list:  # type: ignore[type-arg]
    handles: list = [Patch(facecolor=c, edgecolor="none", label=label)  # type: ignore[type-arg]
                     for key, (label, c) in PHASES.items() if per_vm or key in ACTIVE]
    if per_vm:
        handles += [
            Line2D([], [], color="black", marker="x", linestyle="none", label="attempt failed"),
            Line2D([], [], color="black", marker=">", linewidth=1, label="live migration"),
            Line2D([], [], color="black", marker="^", linestyle="none", label="restarted by failover"),
        ]
        handles += [Line2D([], [], color=c, marker="o", linestyle="none", label=f"outcome: {k.replace('_', '-')}")
                    for k, c in OUTCOME_COLOURS.items()]
    else:
        handles += [
            Line2D([], [], color="#333333", linewidth=1.4, label="VMs hosted there without an outcome yet (right axis)"),
            Line2D([], [], color=RETRY_LINE, linewidth=1.6, label="VMs in retry wait (right axis)"),
            Line2D([], [], color="black", marker="x", linestyle="none", label="attempt failed"),
            Line2D([], [], color="black", marker="v", linestyle="none", label="live migration out"),
            Line2D([], [], color="#777777", marker="^", linestyle="none", label="live migration in"),
        ]
    handles.append(Patch(facecolor=CRASH_COLOUR, alpha=0.18, label="node down (crash to recovery)"))
    return handles


def render(tl: Timeline, path: str | Path) -> Path:
    """Draw `tl` into `path` (PNG)."""
    path = Path(path)
    unit, uname = time_unit(tl.t_end)
    per_vm = per_vm_lanes(tl)
    t_lo = min(0.0, tl.t_start)
    x_max = max(tl.t_end, 1.0) / unit
    px_per_unit = (WIDTH_IN * 0.78 * DPI) / (x_max - t_lo / unit)
    min_w = 1.5 / px_per_unit  # spans shorter than ~1.5 px are drawn 1.5 px wide

    # ---- layout: every height in inches, axes placed by hand ----
    lanes = _vm_lanes(tl) if per_vm else []
    node_heights = [max(1.0, 0.2 * len(lanes)) if per_vm else 0.75 * len(tl.nodes) * (1 + BAND_GAP)]
    panels = [(h, 0.35 if per_vm else 0.6) for h in node_heights]  # (room for the panel's title)
    panels += [(max(0.7, 0.2 * len(tl.csvs)), 0.45), (1.2, 0.45), (1.2, 0.45)]
    n_handles = len(_legend_handles(per_vm))
    legend_rows = -(-n_handles // LEGEND_COLS)
    title = title_of(tl)
    legend_at_in = 0.12 + 0.26 * (title.count("\n") + 1) + 0.08  # below the title's lines
    top_in = legend_at_in + 0.21 * legend_rows + 0.2
    bottom_in = 0.6
    fig_h = top_in + sum(h + g for h, g in panels) + bottom_in
    fig = Figure(figsize=(WIDTH_IN, fig_h), dpi=DPI)
    axes = []
    y = fig_h - top_in
    for h, gap in panels:
        y -= gap + h
        axes.append(fig.add_axes((LEFT, y / fig_h, RIGHT - LEFT, h / fig_h)))
    node_axes = axes[: len(node_heights)]
    ax_csv, ax_snap, ax_lat = axes[len(node_heights):]

    fig.suptitle(title, fontsize=FONT_HEAD, fontweight="bold", y=1 - 0.12 / fig_h, va="top")
    if per_vm:
        _draw_per_vm(tl, node_axes[0], lanes, unit, min_w)
    else:
        _draw_aggregate(tl, node_axes[0], unit, t_lo)
    _draw_csvs(tl, ax_csv, unit, min_w)
    _draw_snapshots(tl, ax_snap, unit)
    _draw_latency(tl, ax_lat, unit)

    # Ticks are what costs most to draw: x ticks on the bottom axes only, grid lines drawn by hand.
    xlim = (t_lo / unit, x_max * 1.005)
    xticks = [x for x in MaxNLocator(nbins=12, steps=[1, 2, 2.5, 5, 10]).tick_values(*xlim) if xlim[0] <= x <= xlim[1]]
    jobs = [t / unit for t0, t1, _mode in tl.jobs for t in (t0, t1) if t is not None]
    for ax in axes:
        ax.set_autoscalex_on(False)
        ax.set_xlim(*xlim)
        ax.vlines(xticks, 0, 1, transform=ax.get_xaxis_transform(), colors="#e3e3e3", linewidth=0.6, zorder=0)
        if jobs:
            ax.vlines(jobs, 0, 1, transform=ax.get_xaxis_transform(), colors="#555555", linestyles="--",
                      linewidth=0.8, zorder=5)
        if ax is not axes[-1]:
            ax.xaxis.set_major_locator(NullLocator())
    axes[-1].xaxis.set_major_locator(FixedLocator(xticks))
    ax_lat.set_xlabel(f"simulated time ({uname}); dashed lines: backup job start and end")

    axes[-1].tick_params(axis="x", labelsize=FONT_SMALL)
    ax_lat.xaxis.label.set_fontsize(FONT_LABEL)
    fig.legend(handles=_legend_handles(per_vm), loc="upper center", ncol=LEGEND_COLS, fontsize=FONT_SMALL,
               frameon=False, bbox_to_anchor=(0.5, 1 - legend_at_in / fig_h), columnspacing=1.5, handlelength=1.6)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _draw_csvs(tl: Timeline, ax, unit: float, min_w: float) -> None:  # type: ignore[no-untyped-def]
    """Per CSV the stretches it was redirected, drawn per kind of hold (metadata under a pin
    under a stale "backup in progress" hold), labelled with the CSV's total redirected time."""
    total = redirected_intervals(tl.holds, tl.t_end)
    order = ["metadata", "backup_pin", "backup_in_progress"]
    kinds = sorted({h.kind for h in tl.holds}, key=lambda k: order.index(k) if k in order else -1)
    for kind in kinds:
        per_kind = redirected_intervals([h for h in tl.holds if h.kind == kind], tl.t_end)
        ys, lefts, widths = [], [], []
        for i, c in enumerate(tl.csvs):
            for a, z, _k in per_kind.get(c, []):
                ys.append(i)
                lefts.append(a / unit)
                widths.append(max((z - a) / unit, min_w))
        _bars(ax, ys, lefts, widths, [HOLD_COLOURS.get(kind, "#fd8d3c")] * len(ys), 0.6)
    secs = {c: sum(z - a for a, z, _k in total.get(c, [])) for c in tl.csvs}
    _scale_labels(ax, list(range(len(tl.csvs))), [f"{c}  {_fmt_s(secs[c])}" for c in tl.csvs], tick_pt=0.0)
    ax.set_ylim(len(tl.csvs) - 0.5, -0.5)
    what = ", ".join(f"{k.replace('_', ' ')} ({_colour_name(HOLD_COLOURS.get(k, ''))})" for k in kinds) or "none"
    ax.set_title(f"CSV redirected access (label: total time redirected); holds: {what}", fontsize=FONT_TITLE, loc="left")


def _colour_name(c: str) -> str:
    return {"#e6550d": "dark orange", "#fd8d3c": "light orange", "#a50f15": "dark red"}.get(c, "orange")


def _draw_snapshots(tl: Timeline, ax, unit: float) -> None:  # type: ignore[no-untyped-def]
    plotted = False
    for (t, v), label, colour in ((tl.existing, "existing", "#1f77b4"), (tl.pending, "pending\n(queued at array)", "#ff7f0e")):
        if len(t):
            ax.step(np.r_[t, tl.t_end] / unit, np.r_[v, v[-1]], where="post", color=colour, linewidth=1.2,
                    label=f"{label}\n(peak {int(v.max())})")
            plotted = True
    ax.set_ylim(bottom=0)
    ax.set_ylabel("snapshots", fontsize=FONT_LABEL)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.tick_params(axis="y", labelsize=FONT_SMALL)
    if plotted:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=FONT_SMALL, frameon=False)
    else:
        ax.text(0.5, 0.5, "no storage snapshots", transform=ax.transAxes, ha="center", va="center", fontsize=FONT_SMALL)
    ax.set_title("Storage snapshots over time (all LUNs)", fontsize=FONT_TITLE, loc="left")


def _draw_latency(tl: Timeline, ax, unit: float) -> None:  # type: ignore[no-untyped-def]
    t, p50, p99 = tl.latency
    if len(t):
        # each sample holds until the next one (the series records the state after each change)
        tx = np.r_[t, max(tl.t_end, float(t[-1]))] / unit
        ax.step(tx, np.r_[p99, p99[-1]], where="post", color="#d62728", linewidth=2.2, label="p99", alpha=0.85)
        ax.step(tx, np.r_[p50, p50[-1]], where="post", color="#1f77b4", linewidth=1.1, linestyle=(0, (4, 2)),
                label="p50")
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=FONT_SMALL, frameon=False)
        hi = float(np.nanmax(p99)) if np.any(np.isfinite(p99)) else 1.0
        ax.set_ylim(0, hi * 1.15 if hi > 0 else 1.0)
    else:
        ax.text(0.5, 0.5, "no latency samples", transform=ax.transAxes, ha="center", va="center", fontsize=FONT_SMALL)
    ax.set_ylabel("ms", fontsize=FONT_LABEL)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.tick_params(axis="y", labelsize=FONT_SMALL)
    ax.set_title("VM I/O latency over VMs (p50, p99)", fontsize=FONT_TITLE, loc="left")
