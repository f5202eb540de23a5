"""What every part of `timeline.png` shares: its size, type sizes and colours, time units, and
horizontal bars drawn as one collection."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.lines import TICKLEFT, TICKRIGHT
from matplotlib.ticker import NullLocator

# [P] The picture is WIDTH_IN x DPI = 1300 px wide: the width of report.html's column in a 1400 px
# window, so the page shows it unscaled there (narrower windows scale it down; the page never scales
# it up). Type sizes in points at DPI 100 (1 pt = 1.39 px): nothing smaller than FONT_SMALL, 12.5 px.
WIDTH_IN = 13.0
DPI = 100
FONT_SMALL = 9.0  # lane, tick and annotation labels, legends
FONT_LABEL = 10.0  # node names, axis labels
FONT_TITLE = 11.0  # panel titles
FONT_HEAD = 13.0  # the picture's title
HOLD_COLOURS = {"backup_pin": "#e6550d", "metadata": "#fd8d3c", "backup_in_progress": "#a50f15"}
CRASH_COLOUR = "#d62728"
RETRY_LINE = "#c2185b"
LEFT, RIGHT = 0.14, 0.865  # axes edges (figure fraction); per-panel legends go right of RIGHT


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


def _scale_labels(ax, ys: list[float], labels: list[str], right: bool = False, colour: str = "black",  # type: ignore[no-untyped-def]
                  tick_pt: float | None = None) -> None:
    """A y scale's tick marks (`tick_pt` long; the axis's own length if None) and labels, as the y
    axis draws them, for many rows: one marker line and a text each (a matplotlib Tick, four
    artists and its layout, costs a few ms to make and draw: the 256 of 64 nodes' bands were about
    half the picture's time). The axis itself is left without ticks (NullLocator)."""
    rc = matplotlib.rcParams
    size = rc["ytick.major.size"] if tick_pt is None else tick_pt
    ax.yaxis.set_major_locator(NullLocator())
    x = 1.0 if right else 0.0
    if size > 0:
        ax.plot([x] * len(ys), ys, linestyle="none", marker=TICKRIGHT if right else TICKLEFT, markersize=size,
                markeredgewidth=rc["ytick.major.width"], color=rc["ytick.color"], transform=ax.get_yaxis_transform(),
                clip_on=False, zorder=2.5)
    tf, va, ha = (ax.get_yaxis_text2_transform if right else ax.get_yaxis_text1_transform)(rc["ytick.major.pad"] + size)
    for y, label in zip(ys, labels, strict=True):
        ax.text(x, y, label, transform=tf, va=va, ha=ha, fontsize=FONT_SMALL, color=colour, clip_on=False)
