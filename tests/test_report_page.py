"""The report page (issue 16): timelines sized for the page with readable labels and the headline
counts in their titles, the consistent-count difference explained, and a folder's generations of
another run left out (the report never mixes runs). The page in a real browser at 1400 px:
tests/test_report.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import matplotlib.figure
import matplotlib.text
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from typer.testing import CliRunner

from cluster_sim.cli import app
from cluster_sim.report import html as report_html
from cluster_sim.report import timeline
from cluster_sim.report.spans import load

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small-4node.yaml"
runner = CliRunner()


def drawn(folder: Path, monkeypatch) -> matplotlib.figure.Figure:  # type: ignore[no-untyped-def]
    """The figure `timeline.render` draws for a generation folder (laid out, not written)."""
    figs = []

    def keep(fig, *_a, **_k):  # type: ignore[no-untyped-def]
        FigureCanvasAgg(fig).draw()  # (as savefig draws a PNG: the figure is no pyplot figure, its canvas a base one)
        figs.append(fig)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    timeline.render(load(folder), folder / "unused.png")
    return figs[0]


@pytest.mark.parametrize("gen", ["ws2012r2", "ws2016"])
def test_a_timeline_is_as_wide_as_the_page_and_no_label_is_under_9_points(ten, gen, monkeypatch) -> None:
    fig = drawn(ten / gen, monkeypatch)
    width_px = fig.get_size_inches()[0] * fig.dpi
    assert width_px == 1300  # the page's column at 1400 px: shown unscaled (12.5 px for 9 pt)
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    assert len(texts) > 50
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < timeline.FONT_SMALL]
    assert small == []
    assert timeline.FONT_SMALL * fig.dpi / 72 >= 12.5


def test_the_timeline_title_carries_the_headline_counts(ten) -> None:
    for gen in ("ws2012r2", "ws2016"):
        s = json.loads((ten / gen / "summary.json").read_text())
        title = timeline.title_of(load(ten / gen))
        sets = s["snapshot_sets"]
        assert f"{s['hw_snapshots_created']} storage snapshots in {sets} set{'' if sets == 1 else 's'}" in title
        assert f"{s['outcomes']['app_consistent']} app-consistent" in title
        assert title.count("\n") in (1, 2) and all(len(line) <= 95 for line in title.split("\n"))
    assert "retry" in timeline.title_of(load(ten / "ws2012r2"))  # (10vm-2node's crash makes one)


def test_the_page_shows_timelines_at_their_drawn_width_and_no_debug_text(ten) -> None:
    page = (ten / "report.html").read_text()
    sizes = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="timeline of the \w+ backup" '
                       r'width="(\d+)" height="(\d+)">', page)
    assert len(sizes) == 4 and all(w == "1300" for w, _h in sizes)
    assert "page loaded" not in page
    assert "<script" not in page and 'id="page-status"' not in page  # (the browser test brings its own probe)


def test_the_page_explains_why_verified_app_consistent_counts_more(ten) -> None:
    page = (ten / "report.html").read_text()
    assert 'id="consistent-counts"' in page
    notes = report_html.consistent_count_notes([report_html.Generation(
        g, ten / g, json.loads((ten / g / "summary.json").read_text())) for g in ("ws2012r2", "ws2016")])
    for line in notes:
        assert line in page.replace("&#x27;", "'")
    s = json.loads((ten / "ws2016" / "summary.json").read_text())
    o, v = s["outcomes"], s["verification"]
    assert v["app_consistent"] == o["app_consistent"] + o["offline"] + o["saved_state"] > o["app_consistent"]
    assert (f"ws2016: {o['app_consistent']} app-consistent + {o['offline']} offline + {o['saved_state']} saved-state "
            f"= {v['app_consistent']}; verified app-consistent: {v['app_consistent']}") in notes


def test_the_report_leaves_out_generation_folders_of_another_run_and_says_so(tmp_path) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    assert runner.invoke(app, ["run", str(SMALL), "--out", str(mine), "-g", "ws2016", "-g", "ws2012r2", "--seed",
                               "99", "-q", "--no-report"]).exit_code == 0
    assert runner.invoke(app, ["run", str(SMALL), "--out", str(other), "-g", "ws2012", "-g", "ws2012r2", "-q",
                               "--no-report"]).exit_code == 0
    # seed-7 folders beside the seed-99 run (as an older cluster-sim left them, or copied in by hand)
    shutil.copytree(other / "ws2012", mine / "ws2012")
    shutil.rmtree(mine / "ws2012r2")
    shutil.copytree(other / "ws2012r2", mine / "ws2012r2")
    res = runner.invoke(app, ["report", str(mine)])
    assert res.exit_code == 1, res.output  # (said, and the page drawn without them)
    err = " ".join(res.stderr.split())
    assert "ws2012: left out: not a generation of the run in run.json (ws2016, ws2012r2)" in err
    assert ("ws2012r2: left out: summary.json of scenario small-4node seed 7, not of the run in run.json "
            "(small-4node seed 99)") in err
    page = (mine / "report.html").read_text()
    assert 'id="gen-ws2016"' in page and 'id="gen-ws2012"' not in page and 'id="gen-ws2012r2"' not in page
    assert "seed 99" in page


@pytest.mark.parametrize("side", ["left", "right", "labels only"])
def test_scale_labels_drawn_as_texts_are_the_pixels_the_axis_ticks_draw(side) -> None:
    # The timeline's per-band scales (64 nodes: 256 ticks) and its CSV labels are a marker line
    # and texts (timeline_style._scale_labels), not matplotlib Ticks: the same pixels, to the last
    # one, as the axis's own ticks and labels at those positions (left, right of a twin axes, or
    # labels without marks as the CSV panel has them).
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.ticker import NullLocator

    from cluster_sim.report.timeline_style import FONT_SMALL, _scale_labels

    ys, labels = [0.5, 2.0, 4.25, 7.0], ["0", "50", "100", "CSV-07  12.5 min"]

    def picture(by_texts: bool) -> np.ndarray:
        fig = matplotlib.figure.Figure(figsize=(4, 3), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.4, 0.1, 0.3, 0.8))
        ax.set_ylim(0, 8)
        ax.xaxis.set_major_locator(NullLocator())
        if side == "right":
            ax.yaxis.set_major_locator(NullLocator())
            ax = ax.twinx()
            ax.set_ylim(0, 8)
        if by_texts:
            _scale_labels(ax, ys, labels, right=side == "right", colour="#333333" if side == "right" else "black",
                          tick_pt=0.0 if side == "labels only" else None)
        else:
            ax.set_yticks(ys)
            ax.set_yticklabels(labels, fontsize=FONT_SMALL, **({"color": "#333333"} if side == "right" else {}))
            if side == "labels only":
                ax.tick_params(axis="y", length=0)
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba()).copy()

    ticks, texts = picture(False), picture(True)
    assert (ticks != 255).any()  # (something is drawn)
    assert np.array_equal(ticks, texts)
