"""The report: phase spans from the trace, timeline.png, trace.perfetto.json and report.html, the
`report` command on a saved results folder, and the page in a real (headless) Chromium.

The browser test installs Debian's chromium when it is missing (`apt-get update && apt-get
install -y chromium`, as root) and is skipped, saying why, only when that is impossible.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import browser_helpers
import pytest
from typer.testing import CliRunner

from cluster_sim.cli import app
from cluster_sim.kernel.trace import read_jsonl
from cluster_sim.report import html as report_html
from cluster_sim.report import timeline
from cluster_sim.report.spans import PHASES, load, occupancy

ROOT = Path(__file__).parent.parent
TEN = ROOT / "scenarios" / "10vm-2node.yaml"
BIG = ROOT / "scenarios" / "800vm-8node.yaml"
GENERATIONS = ["ws2008r2", "ws2012", "ws2012r2", "ws2016"]
REPORT_FILES = ("timeline.png", "trace.perfetto.json")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


def _events(folder: Path, name: str) -> list[dict]:
    return [e for e in read_jsonl(folder / "trace.jsonl") if e["event"] == name]


# ----------------------------------------------------------------------------------------------
# spans derived from trace.jsonl
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gen", GENERATIONS)
def test_each_vm_has_one_phase_at_a_time_inside_its_attempts(ten, gen):
    tl = load(ten / gen)
    assert len(tl.vms) == 10
    by_vm = defaultdict(list)
    for s in tl.spans:
        assert s.phase in PHASES
        assert s.end > s.start
        by_vm[s.vm].append(s)
    for vm, spans in by_vm.items():
        spans.sort(key=lambda s: s.start)
        for a, b in zip(spans, spans[1:], strict=False):
            assert b.start >= a.end - 1e-9, (vm, a, b)
    attempts = defaultdict(list)
    for a in tl.attempts:
        attempts[a.vm].append(a)
    for s in tl.spans:
        if s.phase == "retry_wait":
            continue
        assert any(a.attempt == s.attempt and a.start - 1e-9 <= s.start and s.end <= a.end + 1e-9
                   for a in attempts[s.vm]), s
    # one attempt span per vm_attempt event, one outcome per VM
    assert len(tl.attempts) == len(_events(ten / gen, "vm_attempt"))
    assert set(tl.outcomes) == set(tl.vms)


@pytest.mark.parametrize("gen", GENERATIONS)
def test_copy_spans_are_the_traced_copies(ten, gen):
    tl = load(ten / gen)
    starts = sorted((e["vm"], e["sim_time_s"]) for e in _events(ten / gen, "copy_start"))
    copies = sorted((s.vm, s.start) for s in tl.spans if s.phase == "copy")
    assert copies == starts
    for vm, (outcome, _reason, _t) in tl.outcomes.items():
        if outcome in ("app_consistent", "crash_consistent", "saved_state", "offline"):
            assert any(s.vm == vm and s.phase == "copy" for s in tl.spans), vm


def test_generation_specific_phases_appear(ten):
    phases = {g: {s.phase for s in load(ten / g).spans} for g in GENERATIONS}
    assert {"freeze", "snapshot", "auto_recovery", "paused", "copy"} <= phases["ws2008r2"]
    assert {"freeze", "checkpoint", "snapshot", "auto_recovery", "copy", "merge"} <= phases["ws2012r2"]
    assert {"freeze", "checkpoint", "snapshot", "copy", "wait"} <= phases["ws2016"]
    assert "auto_recovery" not in phases["ws2016"] and "paused" not in phases["ws2016"]


def test_node_crash_migration_and_retry_are_picked_up(ten):
    tl = load(ten / "ws2008r2")
    assert [(d.node, d.recovered is not None) for d in tl.downs] == [("node-2", True)]
    assert tl.downs[0].crashed == pytest.approx(900.0)
    assert [m.vm for m in tl.migrations] == ["win-app-0003"]
    assert tl.migrations[0].status == "done"
    assert [(t, n, r) for t, _vm, n, r in tl.failures] == [(900.0, "node-2", "copy_interrupted")]
    assert any(s.phase == "retry_wait" for s in tl.spans)
    assert tl.restarts


def test_snapshot_counts_and_redirected_holds_follow_the_trace(ten):
    tl = load(ten / "ws2012r2")
    summary = json.loads((ten / "ws2012r2" / "summary.json").read_text())
    t, pending = tl.pending
    assert pending.max() == summary["peak_pending_snapshots"]
    assert pending[-1] == 0 and tl.existing[1][-1] == 0
    assert len(tl.holds) == len(_events(ten / "ws2012r2", "csv_redirect_hold"))
    assert all(h.end is not None and h.end >= h.start for h in tl.holds)


def test_occupancy_is_the_mean_number_of_spans_per_bin():
    from cluster_sim.report.spans import Span

    spans = [Span("a", "n", "copy", 0.0, 10.0, 1), Span("b", "n", "copy", 5.0, 15.0, 1)]
    import numpy as np

    got = occupancy(spans, np.array([0.0, 5.0, 10.0, 15.0, 20.0]))
    assert got.tolist() == pytest.approx([1.0, 2.0, 1.0, 0.0])


# ----------------------------------------------------------------------------------------------
# the files
# ----------------------------------------------------------------------------------------------
def test_run_writes_the_report_files(ten):
    for gen in GENERATIONS:
        png = (ten / gen / "timeline.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 20_000, gen
        assert (ten / gen / "trace.perfetto.json").stat().st_size > 1000
    assert (ten / "report.html").is_file()


def _nesting_errors(spans: list[tuple[int, int, str]]) -> list[str]:
    """Spans (start, end, name) on one track must nest: each inside the enclosing one or after it."""
    errors = []
    stack: list[tuple[int, int, str]] = []
    for s in sorted(spans, key=lambda x: (x[0], -(x[1] - x[0]))):
        while stack and stack[-1][1] <= s[0]:
            stack.pop()
        if stack and s[1] > stack[-1][1]:
            errors.append(f"{s} overlaps {stack[-1]}")
        stack.append(s)
    return errors


@pytest.mark.parametrize("gen", GENERATIONS)
def test_perfetto_json_parses_and_spans_nest_per_track(ten, gen):
    doc = json.loads((ten / gen / "trace.perfetto.json").read_text())
    events = doc["traceEvents"]
    assert doc["displayTimeUnit"] in ("ms", "ns")
    tracks: dict[tuple[int, int], list[tuple[int, int, str]]] = defaultdict(list)
    open_be: dict[tuple[int, int], list[dict]] = defaultdict(list)
    async_open: dict[tuple[str, str], int] = {}
    for e in events:
        assert isinstance(e["ph"], str) and isinstance(e["pid"], int)
        if e["ph"] in ("X", "B", "E", "i", "C", "b", "e"):
            assert isinstance(e["ts"], int | float) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert e["dur"] >= 0, e
            tracks[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e["name"]))
        elif e["ph"] == "B":
            open_be[(e["pid"], e["tid"])].append(e)
        elif e["ph"] == "E":
            b = open_be[(e["pid"], e["tid"])].pop()
            tracks[(e["pid"], e["tid"])].append((b["ts"], e["ts"], b["name"]))
        elif e["ph"] == "b":
            async_open[(e["cat"], e["id"])] = e["ts"]
        elif e["ph"] == "e":
            assert e["ts"] >= async_open.pop((e["cat"], e["id"]))
    assert not any(open_be.values()) and not async_open
    for key, spans in tracks.items():
        assert not _nesting_errors(spans), (key, _nesting_errors(spans)[:3])

    meta = [e for e in events if e["ph"] == "M"]
    processes = {e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert {"node-1", "node-2", "cluster", "storage (array and CSVs)"} <= processes
    threads = {e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    vms = {r.split(",")[0] for r in (ten / gen / "vms.csv").read_text().splitlines()[1:]}
    assert vms <= threads  # one track per VM
    phases = {e["cat"] for e in events if e["ph"] == "X"}
    assert {"attempt", "copy", "snapshot"} <= phases
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert {"pending snapshots", "existing snapshots", "csv-1 redirected holds", "csv-2 redirected holds"} <= counters
    instants = {e["name"] for e in events if e["ph"] == "i"}
    assert "node crashed" in instants
    assert any(n.startswith("attempt failed") for n in instants)


def test_perfetto_nesting_check_catches_overlap():
    assert _nesting_errors([(0, 10, "a"), (2, 5, "b"), (5, 10, "c"), (10, 12, "d")]) == []
    assert _nesting_errors([(0, 10, "a"), (5, 15, "b")])


def test_html_is_one_self_contained_page(ten):
    page = (ten / "report.html").read_text()
    assert "<link" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "url(" not in page
    for gen in GENERATIONS:
        assert f'id="gen-{gen}"' in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(GENERATIONS)
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for b in images)
    assert 'id="comparison-table"' in page and 'class="num best"' in page
    assert "what it tells you" in page and "Backup window" in page
    s = json.loads((ten / "ws2016" / "summary.json").read_text())
    if "verification" in s:
        assert 'id="verification-table"' in page


def test_report_command_redraws_a_saved_folder_without_running(ten, tmp_path, monkeypatch):
    saved = tmp_path / "saved"
    shutil.copytree(ten, saved)
    for gen in GENERATIONS:
        for name in REPORT_FILES:
            (saved / gen / name).unlink()
    (saved / "report.html").unlink()
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in saved.rglob("*") if p.is_file()}

    import cluster_sim.simulation

    def no_run(*_a, **_k):
        raise AssertionError("report must not run the simulation")

    monkeypatch.setattr(cluster_sim.simulation, "run", no_run)
    result = runner.invoke(app, ["report", str(saved)])
    assert result.exit_code == 0, result.output
    for gen in GENERATIONS:
        for name in REPORT_FILES:
            assert (saved / gen / name).is_file()
    assert (saved / "report.html").is_file()
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before  # inputs untouched
    # the same inputs draw the same Perfetto trace
    assert (saved / "ws2016" / "trace.perfetto.json").read_bytes() == (ten / "ws2016" / "trace.perfetto.json").read_bytes()


def test_report_command_on_a_folder_without_results_exits_2(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "no generation folders" in result.stderr
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2


def test_report_works_without_a_trace(ten, tmp_path):
    saved = tmp_path / "notrace"
    shutil.copytree(ten / "ws2012", saved / "ws2012")
    (saved / "ws2012" / "trace.jsonl").unlink()
    rep = report_html.build_report(saved)
    assert not rep.errors
    assert (saved / "ws2012" / "timeline.png").read_bytes().startswith(PNG_MAGIC)


def test_run_with_no_report_writes_none(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(TEN), "--out", str(out), "-g", "ws2016", "--no-report"])
    assert result.exit_code == 0, result.output
    assert not (out / "report.html").exists()
    assert not (out / "ws2016" / "timeline.png").exists()


def test_a_report_failure_is_a_warning_and_keeps_the_exit_code(tmp_path, monkeypatch):
    def broken(_folder, **_):
        raise RuntimeError("no ink")

    monkeypatch.setattr(report_html, "build_report", broken)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(TEN), "--out", str(out), "-g", "ws2012r2"])
    assert result.exit_code == 0, result.output
    assert "warning: report not written: RuntimeError: no ink" in " ".join(result.stderr.split())
    assert (out / "ws2012r2" / "summary.json").is_file()


def test_ten_vms_get_one_lane_each(ten):
    tl = load(ten / "ws2012")
    assert timeline.per_vm_lanes(tl)
    lanes = timeline._vm_lanes(tl)
    assert [name for kind, name in lanes if kind == "node"] == ["node-1", "node-2"]
    assert sorted(name for kind, name in lanes if kind == "vm") == sorted(tl.vms)


@pytest.mark.slow
def test_800_vm_report_draws_aggregate_lanes_per_node_and_a_nested_perfetto_trace(tmp_path):
    out = tmp_path / "big"
    result = runner.invoke(app, ["run", str(BIG), "--out", str(out), "--backend", "local", "-g", "ws2016",
                                 "--no-report"])
    assert result.exit_code == 0, result.output
    rep = report_html.build_report(out)  # its speed is measured by `make bench`, not here
    assert not rep.errors
    tl = load(out / "ws2016")
    assert len(tl.vms) == 800 and len(tl.nodes) == 8
    assert not timeline.per_vm_lanes(tl)  # per node: VMs in each phase over time
    assert (out / "ws2016" / "timeline.png").read_bytes().startswith(PNG_MAGIC)
    doc = json.loads((out / "ws2016" / "trace.perfetto.json").read_text())
    spans: dict[tuple[int, int], list] = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            spans[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    assert len(spans) > 800
    assert all(not _nesting_errors(s) for s in spans.values())


# ----------------------------------------------------------------------------------------------
# the page in a real browser
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_html_loads_in_headless_chromium_at_1400_px_without_errors_or_debug_text(ten, tmp_path):
    chromium = browser_helpers.chromium()
    url = (ten / "report.html").resolve().as_uri()
    dom = browser_helpers.dump_dom(chromium, ten / "report.html", tmp_path, "--enable-logging=stderr", "--v=0",
                                   "--window-size=1400,2400")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    status = re.search(r'<p id="page-status"([^>]*)>(.*?)</p>', page, re.S)
    assert status, page[-2000:]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', status.group(1)))
    assert attrs.get("data-loaded") == "1", attrs
    assert attrs.get("data-images") == str(len(GENERATIONS)) and attrs.get("data-broken-images") == "0", attrs
    # no debug text on the page (it said "page loaded: 4 images")
    assert status.group(2) == "" and "page loaded" not in page
    # at 1400 px the timelines show unscaled: their smallest label (9 pt at 100 dpi) is 12.5 px on screen
    assert float(attrs["data-min-image-scale"]) == 1.0, attrs
    errors = re.search(r'<pre id="console-errors" data-count="(\d+)">(.*?)</pre>', page, re.S)
    assert errors and errors.group(1) == "0" and errors.group(2).strip() == "", errors and errors.group(2)
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", dom.stderr), dom.stderr[-2000:]
    for gen in GENERATIONS:
        assert f'id="gen-{gen}"' in page

    shots = ROOT / "results" / "report-check"
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "10vm-2node-report.png"
    shot.unlink(missing_ok=True)
    done = browser_helpers.headless(chromium, tmp_path / "profile-shot", "--hide-scrollbars",
                                    f"--screenshot={shot}", "--window-size=1400,2400", url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 50_000


def test_a_run_drawn_where_its_generations_ran_writes_the_files_a_serial_run_and_the_report_command_write(tmp_path):
    # --workers 2: each generation's folder is written and drawn in the worker that ran it
    folders = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        result = runner.invoke(app, ["run", str(TEN), "--out", str(out), "-g", "ws2012", "-g", "ws2016",
                                     "--workers", workers])
        assert result.exit_code == 0, result.output
        folders[workers] = out
    files = sorted(p.relative_to(folders["1"]) for p in folders["1"].rglob("*") if p.is_file())
    drawn = {Path(g) / f for g in ("ws2012", "ws2016") for f in ("timeline.png", "trace.perfetto.json")}
    assert drawn <= set(files) and Path("report.html") in files
    for rel in files:
        if rel.name not in ("run.json", "scenario.resolved.yaml"):  # (wall times; run.workers)
            assert (folders["1"] / rel).read_bytes() == (folders["2"] / rel).read_bytes(), rel
    # the report command, drawing again from the written folder, draws the same pictures
    again = tmp_path / "again"
    shutil.copytree(folders["2"], again)
    for rel in drawn:
        (again / rel).unlink()
    assert runner.invoke(app, ["report", str(again)]).exit_code == 0
    for rel in drawn:
        assert (again / rel).read_bytes() == (folders["2"] / rel).read_bytes(), rel
