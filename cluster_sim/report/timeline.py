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

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator  # noqa: E402

from cluster_sim.report.spans import (  # noqa: E402
    ACTIVE,
    OUTCOME_COLOURS,
    PHASES,
    Timeline,
    load,
    occupancy,
    redirected_intervals,
)

PER_VM_LIMIT = 48  # more VMs than this: aggregate lanes per node
BINS = 480
# [P] The picture is WIDTH_IN x DPI = 1300 px wide: the width of report.html's column in a 1400 px
# window, so the page shows it unscaled there (narrower windows scale it down; the page never scales
# it up). Type sizes in points at DPI 100 (1 pt = 1.39 px): nothing smaller than FONT_SMALL, 12.5 px.
WIDTH_IN = 13.0
DPI = 100
FONT_SMALL = 9.0  # lane, tick and annotation labels, legends
FONT_LABEL = 10.0  # node names, axis labels
FONT_TITLE = 11.0  # panel titles
FONT_HEAD = 13.0  # the picture's title
TITLE_LINE_CHARS = 95  # [P] characters of the title (bold, FONT_HEAD) that fit the width
HOLD_COLOURS = {"backup_pin": "#e6550d", "metadata": "#fd8d3c", "backup_in_progress": "#a50f15"}
CRASH_COLOUR = "#d62728"
RETRY_LINE = "#c2185b"
LEFT, RIGHT = 0.14, 0.865  # axes edges (figure fraction); per-panel legends go right of RIGHT
LEGEND_COLS = 4


def time_unit(t_end: float) -> tuple[float, str]:
    if t_end >= 3 * 3600:
        return 3600.0, "h"
    if t_end >= 180:
        return 60.0, "min"
    return 1.0, "s"


def _fmt_s(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


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


def _bars(ax, ys, lefts, widths, colours, height: float, zorder: float = 3) -> None:  # type: ignore[no-untyped-def]
    """Horizontal bars as one PolyCollection (barh makes one patch per bar: slow at 800 VMs)."""
    if not len(ys):
        return
    y = np.asarray(ys, dtype=float)
    x0 = np.asarray(lefts, dtype=float)
    x1 = x0 + np.asarray(widths, dtype=float)
    lo, hi = y - height / 2, y + height / 2
    verts = np.stack([np.stack([x0, lo], 1), np.stack([x0, hi], 1), np.stack([x1, hi], 1), np.stack([x1, lo], 1)], 1)
    ax.add_collection(PolyCollection(verts, facecolors=colours, edgecolors="none", linewidths=0, zorder=zorder),
                      autolim=False)


def per_vm_lanes(tl: Timeline) -> bool:
    """One lane per VM (few VMs), else one band per node with phase counts."""
    return len(tl.vms) <= PER_VM_LIMIT


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
    fig = plt.figure(figsize=(WIDTH_IN, fig_h), dpi=DPI)
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
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# node lanes
# ----------------------------------------------------------------------------------------------
def _vm_lanes(tl: Timeline) -> list[tuple[str, str]]:
    """Rows top to bottom: ("node", name) headers, each followed by ("vm", name) of its VMs."""
    rows: list[tuple[str, str]] = []
    by_node: dict[str, list[str]] = {}
    for vm in tl.vms:
        by_node.setdefault(tl.vm_home.get(vm, ""), []).append(vm)
    for node in tl.nodes + sorted(set(by_node) - set(tl.nodes)):
        if node not in by_node and node not in tl.nodes:
            continue
        rows.append(("node", node))
        rows += [("vm", vm) for vm in by_node.get(node, [])]
    return rows


def _down_spans(tl: Timeline, node: str) -> list[tuple[float, float, str]]:
    out = []
    for d in tl.downs:
        if d.node == node:
            end = d.recovered if d.recovered is not None else tl.t_end
            out.append((d.crashed, end, "recovered" if d.recovered is not None else "not back"))
    return out


def _draw_per_vm(tl: Timeline, ax, lanes: list[tuple[str, str]], unit: float, min_w: float) -> None:  # type: ignore[no-untyped-def]
    y_of = {name: i for i, (kind, name) in enumerate(lanes) if kind == "vm"}
    node_row = {name: i for i, (kind, name) in enumerate(lanes) if kind == "node"}
    n = len(lanes)
    # node groups: background band, crash shading
    groups: list[tuple[str, int, int]] = []
    for node, r in node_row.items():
        end = r + 1
        while end < n and lanes[end][0] == "vm":
            end += 1
        groups.append((node, r, end))
    for i, (node, r0, r1) in enumerate(groups):
        if i % 2 == 0:
            ax.axhspan(r0 - 0.5, r1 - 0.5, color="#f4f4f4", zorder=0)
        for a, z, how in _down_spans(tl, node):
            ax.fill_between([a / unit, z / unit], r0 - 0.5, r1 - 0.5, color=CRASH_COLOUR, alpha=0.15, zorder=1,
                            linewidth=0)
            ax.axvline(a / unit, ymin=1 - (r1 - 0.5 + 0.5) / n, ymax=1 - (r0 - 0.5 + 0.5) / n,
                       color=CRASH_COLOUR, linewidth=1.2)
            ax.text(a / unit, r0, f" {node} crashed ({how})", color=CRASH_COLOUR, fontsize=FONT_SMALL,
                    va="center", ha="left", fontweight="bold", zorder=6)
    # phases, one vectorised barh
    ys, lefts, widths, colours = [], [], [], []
    for sp in sorted(tl.spans, key=lambda s: s.end - s.start, reverse=True):  # short ones on top
        y = y_of.get(sp.vm)
        if y is None:
            continue
        ys.append(y)
        lefts.append(sp.start / unit)
        widths.append(max((sp.end - sp.start) / unit, min_w))
        colours.append(PHASES[sp.phase][1])
    if ys:
        _bars(ax, ys, lefts, widths, colours, 0.64)
    # failures, restarts, outcomes, migrations
    for a in tl.attempts:
        if a.vm in y_of and a.node and a.node != tl.vm_home.get(a.vm):
            ax.text(a.start / unit, y_of[a.vm] - 0.36, f"attempt {a.attempt} on {a.node}", fontsize=FONT_SMALL,
                    va="bottom", ha="left", zorder=6, color="#333333")
    reasons: dict[str, list[tuple[float, str]]] = {}
    for t, vm, _node, reason in tl.failures:
        if vm in y_of:
            ax.plot(t / unit, y_of[vm], marker="x", color="black", markersize=6, mew=1.6, zorder=7)
            reasons.setdefault(vm, []).append((t, reason))
    # why attempts failed: after the VM's last span, else before its first, else above the first failure
    x_lo, x_hi = min(0.0, tl.t_start), max(tl.t_end, 1.0)
    for vm, rs in reasons.items():
        mine = [s for s in tl.spans if s.vm == vm] + [a for a in tl.attempts if a.vm == vm]
        first, last = min(s.start for s in mine), max(s.end for s in mine)
        text = "failed: " + ", ".join(dict.fromkeys(r for _t, r in rs))
        style = {"fontsize": FONT_SMALL, "color": "#8a1010", "zorder": 7}
        if last < x_lo + 0.75 * (x_hi - x_lo):
            ax.text(last / unit, y_of[vm], "   " + text, va="center", ha="left", **style)
        elif first > x_lo + 0.25 * (x_hi - x_lo):
            ax.text(first / unit, y_of[vm], text + "  ", va="center", ha="right", **style)
        else:
            ax.text(rs[0][0] / unit, y_of[vm] - 0.36, text + " ", va="bottom", ha="right", **style)
    for t, vm, _node in tl.restarts:
        if vm in y_of:
            ax.plot(t / unit, y_of[vm], marker="^", color="black", markersize=5, zorder=7)
    for vm, (outcome, _reason, t) in tl.outcomes.items():
        if vm in y_of and outcome in OUTCOME_COLOURS:
            ax.plot(t / unit, y_of[vm], marker="o", color=OUTCOME_COLOURS.get(outcome, "#777777"),
                    markeredgecolor="white", markersize=6, zorder=8)
    for m in tl.migrations:
        if m.vm not in y_of:
            continue
        y = y_of[m.vm]
        end = m.end if m.end is not None else tl.t_end
        ax.plot([m.start / unit, end / unit], [y, y], color="black", linewidth=1.4, zorder=6)
        ax.plot(end / unit, y, marker=">", color="black", markersize=5, zorder=6)
        label = f"migrated {m.src} -> {m.dst}" + ("" if m.status == "done" else f" ({m.status})")
        ax.text(end / unit, y - 0.05, "  " + label, fontsize=FONT_SMALL, va="center", ha="left", zorder=6,
                bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 0.5})
    for t, vm, _node in tl.refusals:
        if vm in y_of:
            ax.plot(t / unit, y_of[vm], marker="|", color="#ff7f0e", markersize=8, mew=1.5, zorder=6)

    labels = []
    for kind, name in lanes:
        if kind == "node":
            labels.append(name)
        else:
            o = tl.outcomes.get(name)
            labels.append(f"{name}  {_short_outcome(o[0]) if o else '?'}")
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=FONT_SMALL)
    for tick, (kind, _name) in zip(ax.get_yticklabels(), lanes, strict=True):
        if kind == "node":
            tick.set_fontweight("bold")
            tick.set_fontsize(FONT_LABEL)
    ax.set_ylim(n - 0.5, -0.5)
    ax.tick_params(axis="y", length=0)
    if tl.jobs:
        ax.set_title("Each VM's backup phases, grouped by the node its first attempt ran on", fontsize=FONT_TITLE, loc="left")
    else:
        ax.set_title("VMs per node (no backup job in this run)", fontsize=FONT_TITLE, loc="left")


def _short_outcome(outcome: str) -> str:
    return {"app_consistent": "app", "crash_consistent": "crash", "saved_state": "saved",
            "offline": "offline", "failed": "FAILED"}.get(outcome, outcome)


def _few_ticks(top: float) -> list[float]:
    """Two or three round ticks from 0 up to `top` (each tick costs drawing time)."""
    hi = float(np.floor(top)) if top >= 1 else 1.0
    if hi < 4:
        return [0.0, hi]
    vals = MaxNLocator(nbins=2, integer=True, steps=[1, 2, 2.5, 5, 10]).tick_values(0, hi)
    return [float(v) for v in vals if 0 <= v <= hi]


def _stack(ax, edges: np.ndarray, layers: list[np.ndarray], colours: list[str], base: float,
           scale: float, cap: float) -> None:  # type: ignore[no-untyped-def]
    """Stacked per-bin values drawn from y=base, value v at base + min(v, cap) * scale (one
    PolyCollection: stackplot / fill_between are slow)."""
    x = np.repeat(edges, 2)[1:-1]  # step outline: each bin flat from its left to its right edge
    low = np.zeros(len(edges) - 1)
    polys, cols = [], []
    for layer, c in zip(layers, colours, strict=True):
        if not np.any(layer > 0):
            continue
        high = low + layer
        lo = base + np.repeat(np.minimum(low, cap), 2) * scale
        hi = base + np.repeat(np.minimum(high, cap), 2) * scale
        polys.append(np.c_[np.r_[x, x[::-1]], np.r_[hi, lo[::-1]]])
        cols.append(c)
        low = high
    if polys:
        ax.add_collection(PolyCollection(polys, facecolors=cols, edgecolors="none", linewidths=0, zorder=3),
                          autolim=False)


BAND_GAP = 0.28  # between node bands, in band heights


def _draw_aggregate(tl: Timeline, ax, unit: float, t_lo: float) -> None:  # type: ignore[no-untyped-def]
    """One band per node on a single axes (one axes per node costs far more to draw): the
    stacked mean number of VMs in each active phase (left scale) and the node's VMs without
    an outcome yet (right scale)."""
    edges = np.linspace(t_lo, max(tl.t_end, 1.0), BINS + 1)
    x_edges = edges / unit
    by_node: dict[str, dict[str, list]] = {}  # type: ignore[type-arg]
    for sp in tl.spans:
        by_node.setdefault(sp.node, {}).setdefault(sp.phase, []).append(sp)
    owed: dict[str, list[tuple[float, float]]] = {}  # node -> stretches a VM hosted there had no outcome yet
    for _vm, node, a, z in tl.to_do():
        owed.setdefault(node, []).append((a, z))
    stacks, backlog, retry = {}, {}, {}
    for node in tl.nodes:
        phases = by_node.get(node, {})
        stacks[node] = [occupancy(phases.get(p, []), edges) for p in ACTIVE]
        retry[node] = occupancy(phases.get("retry_wait", []), edges)
        starts = np.sort(np.array([a for a, _z in owed.get(node, [])]))
        ends = np.sort(np.array([z for _a, z in owed.get(node, [])]))
        at = edges[:-1]  # the count at the start of each bin
        backlog[node] = (np.searchsorted(starts, at, "right") - np.searchsorted(ends, at, "right")).astype(float)
    totals = {node: np.sum(s, axis=0) for node, s in stacks.items()}
    top = max([float(np.max(t)) for t in totals.values()] + [1.0])
    # A burst far above the usual level (e.g. every ws2016 merge at once, within one bin) would
    # squash the rest of the picture: scale to the usual level and write the burst's peak instead.
    busy = np.concatenate([t[t > 0] for t in totals.values()] + [np.zeros(1)])
    usual = max(float(np.percentile(busy, 99)), 1.0)
    if top > 1.5 * usual:
        top = usual
    top_r = max([float(np.max(b)) for b in backlog.values()] + [float(np.max(r)) for r in retry.values()] + [1.0])
    k, kr = 1.0 / (top * 1.12), 1.0 / (top_r * 1.12)  # value -> band height
    n = len(tl.nodes)
    left_ticks, left_labels, right_ticks, right_labels = [], [], [], []
    label_tf = ax.get_yaxis_transform()  # x in axes fraction, y in data
    for i, node in enumerate(tl.nodes):
        base = (n - 1 - i) * (1 + BAND_GAP)
        ax.axhspan(base, base + 1, color="#f7f7f7", zorder=0, linewidth=0)
        ax.axhline(base, color="#bbbbbb", linewidth=0.6, zorder=1)
        _stack(ax, x_edges, stacks[node], [PHASES[p][1] for p in ACTIVE], base, k, top * 1.08)
        ax.step(x_edges, base + np.r_[backlog[node], backlog[node][-1]] * kr, where="post", color="#333333",
                linewidth=1.3, zorder=4)
        if np.any(retry[node] > 0):
            r = np.where(retry[node] > 0, retry[node], np.nan)  # drawn only where VMs wait for a retry
            ax.step(x_edges, base + np.r_[r, r[-1]] * kr, where="post", color=RETRY_LINE, linewidth=1.6, zorder=4)
        for v in _few_ticks(top):
            left_ticks.append(base + v * k)
            left_labels.append(f"{v:g}")
        for v in _few_ticks(top_r):
            right_ticks.append(base + v * kr)
            right_labels.append(f"{v:g}")
        ax.text(-0.032, base + 0.5, node, transform=label_tf, ha="right", va="center", fontsize=FONT_LABEL,
                fontweight="bold")
        for a, z, how in _down_spans(tl, node):
            ax.fill_between([a / unit, z / unit], base, base + 1, color=CRASH_COLOUR, alpha=0.18, linewidth=0,
                            zorder=2)
            ax.plot([a / unit] * 2, [base, base + 1], color=CRASH_COLOUR, linewidth=1.2, zorder=5)
            ax.text(a / unit, base + 0.92, f" {node} crashed ({how})", color=CRASH_COLOUR, fontsize=FONT_SMALL, va="top",
                    fontweight="bold", zorder=6)
        fails = [t / unit for t, _vm, n, _r in tl.failures if n == node]
        if fails:
            ax.plot(fails, [base + 0.06] * len(fails), "x", color="black", markersize=5, mew=1.3, zorder=6)
        outs = [m.start / unit for m in tl.migrations if m.src == node]
        ins = [(m.end if m.end is not None else m.start) / unit for m in tl.migrations if m.dst == node]
        if outs:
            ax.plot(outs, [base + 1.0] * len(outs), "v", color="black", markersize=4, zorder=6, clip_on=False)
        if ins:
            ax.plot(ins, [base + 1.0] * len(ins), "^", color="#777777", markersize=4, zorder=6, clip_on=False)
    ax.set_ylim(-0.05, n * (1 + BAND_GAP) - BAND_GAP + 0.08)
    ax.yaxis.set_major_locator(FixedLocator(left_ticks))
    ax.set_yticklabels(left_labels, fontsize=FONT_SMALL)
    ax2 = ax.twinx()
    ax2.set_ylim(ax.get_ylim())
    ax2.yaxis.set_major_locator(FixedLocator(right_ticks))
    ax2.set_yticklabels(right_labels, fontsize=FONT_SMALL, color="#333333")
    ax2.xaxis.set_major_locator(NullLocator())
    ax2.set_ylabel("VMs hosted without an outcome yet", fontsize=FONT_SMALL, color="#333333")
    title = (f"Per node: mean number of VMs in each backup phase ({_fmt_s(edges[1] - edges[0])} bins, left scale) "
             "and VMs it hosts that still have no outcome (right scale);\nshort phases (freeze, snapshot) show in the "
             "Perfetto trace")
    peak_node = max(totals, key=lambda n: float(totals[n].max()), default=None)
    if peak_node is not None and totals[peak_node].max() > top * 1.08:
        j = int(np.argmax(totals[peak_node]))
        title += (f"\nBursts above the scale are cut off: up to {totals[peak_node][j]:.0f} VMs at once "
                  f"({peak_node}, {x_edges[j]:.1f}-{x_edges[j + 1]:.1f} {time_unit(tl.t_end)[1]})")
    ax.set_title(title, fontsize=FONT_TITLE, loc="left")


# ----------------------------------------------------------------------------------------------
# CSVs, snapshots, latency
# ----------------------------------------------------------------------------------------------
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
    ax.set_yticks(range(len(tl.csvs)))
    ax.set_yticklabels([f"{c}  {_fmt_s(secs[c])}" for c in tl.csvs], fontsize=FONT_SMALL)
    ax.set_ylim(len(tl.csvs) - 0.5, -0.5)
    ax.tick_params(axis="y", length=0)
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


def render_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    return render(load(folder), folder / "timeline.png")
