"""The node lanes of `timeline.png`: with few VMs one lane per VM under its node (phases,
failed attempts, outcomes, migrations, restarts); with many, one band per node with the number of
VMs in each phase over time and the VMs without an outcome yet."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.ticker import MaxNLocator, NullLocator

from cluster_sim.report.spans import (
    ACTIVE,
    OUTCOME_COLOURS,
    PHASES,
    Timeline,
    occupancy,
)
from cluster_sim.report.timeline_style import (
    CRASH_COLOUR,
    FONT_LABEL,
    FONT_SMALL,
    FONT_TITLE,
    LEFT,
    RETRY_LINE,
    RIGHT,
    WIDTH_IN,
    _bars,
    _fmt_s,
    _scale_labels,
    time_unit,
)

PER_VM_LIMIT = 48  # more VMs than this: aggregate lanes per node
BINS = 480
BAND_GAP = 0.28  # between node bands, in band heights


def per_vm_lanes(tl: Timeline) -> bool:
    """One lane per VM (few VMs), else one band per node with phase counts."""
    return len(tl.vms) <= PER_VM_LIMIT


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


def _stack(edges: np.ndarray, layers: list[np.ndarray], colours: list[str], base: float, scale: float,
           cap: float, polys: list[np.ndarray], cols: list[str]) -> None:
    """Stacked per-bin values drawn from y=base, value v at base + min(v, cap) * scale: each layer's
    polygon and colour added to `polys` and `cols` (all nodes' layers are one PolyCollection:
    stackplot / fill_between, or a collection per node, are slow)."""
    x = np.repeat(edges, 2)[1:-1]  # step outline: each bin flat from its left to its right edge
    low = np.zeros(len(edges) - 1)
    for layer, c in zip(layers, colours, strict=True):
        if not np.any(layer > 0):
            continue
        high = low + layer
        lo = base + np.repeat(np.minimum(low, cap), 2) * scale
        hi = base + np.repeat(np.minimum(high, cap), 2) * scale
        polys.append(np.c_[np.r_[x, x[::-1]], np.r_[hi, lo[::-1]]])
        cols.append(c)
        low = high


def _steps(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The vertices of a step line: values[i] from edges[i] to edges[i + 1] (ax.step where="post")."""
    return np.c_[np.repeat(edges, 2)[1:-1], np.repeat(values, 2)]


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
    bands, lines, polys, cols, backlog_steps, outs, ins = [], [], [], [], [], [], []
    phase_colours = [PHASES[p][1] for p in ACTIVE]
    for i, node in enumerate(tl.nodes):
        base = (n - 1 - i) * (1 + BAND_GAP)
        bands.append([(0.0, base), (0.0, base + 1), (1.0, base + 1), (1.0, base)])
        lines.append([(0.0, base), (1.0, base)])
        _stack(x_edges, stacks[node], phase_colours, base, k, top * 1.08, polys, cols)
        backlog_steps.append(_steps(x_edges, base + backlog[node] * kr))
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
        outs += [(m.start / unit, base + 1.0) for m in tl.migrations if m.src == node]
        ins += [((m.end if m.end is not None else m.start) / unit, base + 1.0) for m in tl.migrations if m.dst == node]
    # each kind of mark of every band as one artist (an artist per band cost a third of the picture
    # at 64 nodes); drawn in the same order (zorder) as one per band
    ax.add_collection(PolyCollection(bands, facecolors="#f7f7f7", edgecolors="none", linewidths=0, zorder=0,
                                     transform=label_tf), autolim=False)
    ax.add_collection(LineCollection(lines, colors="#bbbbbb", linewidths=0.6, zorder=1, transform=label_tf),
                      autolim=False)
    if polys:
        ax.add_collection(PolyCollection(polys, facecolors=cols, edgecolors="none", linewidths=0, zorder=3),
                          autolim=False)
    ax.add_collection(LineCollection(backlog_steps, colors="#333333", linewidths=1.3, zorder=4, joinstyle="round",
                                     capstyle="projecting"), autolim=False)
    if outs:
        ax.plot(*zip(*outs, strict=True), "v", color="black", markersize=4, zorder=6, clip_on=False)
    if ins:
        ax.plot(*zip(*ins, strict=True), "^", color="#777777", markersize=4, zorder=6, clip_on=False)
    ax.set_ylim(-0.05, n * (1 + BAND_GAP) - BAND_GAP + 0.08)
    _scale_labels(ax, left_ticks, left_labels)
    ax2 = ax.twinx()
    ax2.set_ylim(ax.get_ylim())
    ax2.xaxis.set_major_locator(NullLocator())
    _scale_labels(ax2, right_ticks, right_labels, right=True, colour="#333333")
    ax2.set_ylabel("VMs hosted without an outcome yet", fontsize=FONT_SMALL, color="#333333")
    # beside the scale's labels, as the axis would place it (a digit about 0.6 of the type size wide [P])
    rc = matplotlib.rcParams
    widest_pt = max((len(t) for t in right_labels), default=1) * 0.6 * FONT_SMALL
    ax_w_pt = (RIGHT - LEFT) * WIDTH_IN * 72.0
    ax2.yaxis.set_label_coords(1.0 + (rc["ytick.major.size"] + rc["ytick.major.pad"] + widest_pt
                                      + rc["axes.labelpad"]) / ax_w_pt, 0.5)
    title = (f"Per node: mean number of VMs in each backup phase ({_fmt_s(edges[1] - edges[0])} bins, left scale) "
             "and VMs it hosts that still have no outcome (right scale);\nshort phases (freeze, snapshot) show in the "
             "Perfetto trace")
    peak_node = max(totals, key=lambda n: float(totals[n].max()), default=None)
    if peak_node is not None and totals[peak_node].max() > top * 1.08:
        j = int(np.argmax(totals[peak_node]))
        title += (f"\nBursts above the scale are cut off: up to {totals[peak_node][j]:.0f} VMs at once "
                  f"({peak_node}, {x_edges[j]:.1f}-{x_edges[j + 1]:.1f} {time_unit(tl.t_end)[1]})")
    ax.set_title(title, fontsize=FONT_TITLE, loc="left")
