"""Phase spans are emitted by the backup (kernel/trace.py spans, written as spans.jsonl) and laid out
by the report one phase at a time (report/spans.py), not rebuilt from the trace."""

from __future__ import annotations

from pathlib import Path

import pytest
from backup_helpers import run_gens, scenario_dict, template

from cluster_sim.kernel.trace import Trace
from cluster_sim.report.spans import lay_out, load, phase_spans
from cluster_sim.results import write_generation


class _Clock:
    now = 0.0


def test_a_span_opened_and_closed_records_its_instants_and_is_not_an_event() -> None:
    clock = _Clock()
    tr = Trace(clock)
    tr.open_span("k", "copy", "vm-1", "node-1", 1)
    clock.now = 12.5
    tr.close_span("k", "done")
    tr.close_span("k")  # closing twice records nothing more
    assert tr.spans == [("copy", "vm-1", "node-1", 0.0, 12.5, 1, "done")]
    assert len(tr) == 0


def test_a_with_span_ends_when_its_block_raises() -> None:
    clock = _Clock()
    tr = Trace(clock)
    with pytest.raises(RuntimeError), tr.span("freeze", "vm-1", "node-1", 2):
        clock.now = 3.0
        raise RuntimeError
    assert tr.spans == [("freeze", "vm-1", "node-1", 0.0, 3.0, 2, "")]


def test_lay_out_draws_the_highest_priority_phase_and_waits_in_the_gaps() -> None:
    # attempt 0..100: paused 10..60 with a snapshot 20..30 inside; a copy 70..90 alongside a merge 75..95
    got = lay_out(0.0, 100.0, [("paused", 10, 60), ("snapshot", 20, 30), ("merge", 75, 95), ("copy", 70, 90)])
    assert got == [("wait", 0, 10), ("paused", 10, 20), ("snapshot", 20, 30), ("paused", 30, 60),
                   ("wait", 60, 70), ("copy", 70, 90), ("merge", 90, 95), ("wait", 95, 100)]


def test_phase_spans_clip_to_their_attempt_and_read_failures_from_the_attempt_note() -> None:
    rows = [
        {"phase": "freeze", "vm": "a", "node": "n1", "start_s": 5, "end_s": 8, "attempt": 1},
        {"phase": "attempt", "vm": "a", "node": "n1", "start_s": 0, "end_s": 8, "attempt": 1,
         "note": "failed: vss_writer_timeout"},
        {"phase": "retry_wait", "vm": "a", "node": "n1", "start_s": 8, "end_s": 128, "attempt": 1},
        {"phase": "paused", "vm": "a", "node": "n1", "start_s": 130, "end_s": 400, "attempt": 2},
        {"phase": "attempt", "vm": "a", "node": "n1", "start_s": 128, "end_s": 300, "attempt": 2,
         "note": "saved_state: linux_guest"},
    ]
    spans, attempts, failures = phase_spans(rows)
    assert [(s.phase, s.start, s.end, s.attempt) for s in spans] == [
        ("wait", 0, 5, 1), ("freeze", 5, 8, 1), ("retry_wait", 8, 128, 1), ("wait", 128, 130, 2),
        ("paused", 130, 300, 2)]  # the pause is cut where the attempt ends
    assert [(a.start, a.end, a.note) for a in attempts] == [(0, 8, "failed: vss_writer_timeout"),
                                                            (128, 300, "saved_state: linux_guest")]
    assert failures == [(8, "a", "n1", "vss_writer_timeout")]


def test_a_ws2012r2_vm_has_its_phases_in_order_with_the_trace_s_durations(tmp_path: Path) -> None:
    """One VM: freeze, checkpoint, snapshot, auto-recovery (SCSI fix-up), copy, merge, in that
    order; the freeze lasts the guest's freeze_s, the checkpoint checkpoint_create_s, the fix-up
    scsi_fixup_s, the copy from copy_start to copy_end."""
    d = scenario_dict(fleet=[template(count=1, scsi_controller=True)], nodes=1,
                      backup={"checkpoint_create_s": 7.0, "scsi_fixup_s": 11.0})
    g = run_gens(d, ["ws2012r2"])["ws2012r2"]
    folder = tmp_path / "ws2012r2"
    write_generation(g, folder)
    tl = load(folder)
    phases = [s.phase for s in tl.spans if s.phase != "wait"]
    assert phases == ["freeze", "checkpoint", "snapshot", "auto_recovery", "copy", "merge"]
    dur = {s.phase: s.end - s.start for s in tl.spans if s.phase != "wait"}
    ev = {e: (t, ids) for t, e, ids in g.trace.events if ids.get("vm") == "win-0001"}
    assert dur["freeze"] == pytest.approx(ev["guest_frozen"][1]["freeze_s"], abs=1e-6)
    assert dur["checkpoint"] == pytest.approx(7.0)
    assert dur["auto_recovery"] == pytest.approx(11.0)
    assert dur["copy"] == pytest.approx(ev["copy_end"][0] - ev["copy_start"][0], abs=1e-6)
    assert [(a.note, a.start, a.end) for a in tl.attempts] == [
        ("app_consistent", pytest.approx(ev["vm_attempt"][0]), pytest.approx(ev["vm_outcome"][0]))]
