"""Tests for the event trace: simulated-time stamps, JSON lines output, monotonicity."""

from __future__ import annotations

import json

import pytest
import simpy

from cluster_sim.kernel.trace import Trace, read_jsonl


def _run_traced():
    env = simpy.Environment()
    trace = Trace(env)

    def proc():
        trace("job_start", job="j1")
        yield env.timeout(2.5)
        trace("copy_start", vm="vm-1", node="n1", mib=12.25)
        yield env.timeout(0.1234567891)
        trace("copy_end", vm="vm-1", node="n1")

    env.process(proc())
    env.run()
    return env, trace


def test_events_are_stamped_with_simulated_time():
    _env, trace = _run_traced()
    assert len(trace) == 3
    assert [(t, e) for t, e, _ in trace.events] == [
        (0.0, "job_start"),
        (2.5, "copy_start"),
        (2.6234567891, "copy_end"),
    ]
    assert trace.events[1][2] == {"vm": "vm-1", "node": "n1", "mib": 12.25}


def test_stamp_follows_the_clock_at_call_time_not_creation_time():
    env = simpy.Environment(initial_time=100.0)
    trace = Trace(env)
    trace("a")
    env.run(until=130.0)
    trace("b", k=1)
    assert trace.events == [(100.0, "a", {}), (130.0, "b", {"k": 1})]


def test_write_jsonl_writes_one_json_object_per_line_with_event_time_and_ids(tmp_path):
    _env, trace = _run_traced()
    path = tmp_path / "trace.jsonl"
    trace.write_jsonl(path)
    raw = path.read_text(encoding="utf-8")
    assert raw.endswith("\n")
    lines = raw.splitlines()
    assert len(lines) == 3
    objs = [json.loads(line) for line in lines]
    assert objs == [
        {"event": "job_start", "sim_time_s": 0.0, "job": "j1"},
        {"event": "copy_start", "sim_time_s": 2.5, "vm": "vm-1", "node": "n1", "mib": 12.25},
        # simulated time is rounded to the microsecond in the output
        {"event": "copy_end", "sim_time_s": 2.623457, "vm": "vm-1", "node": "n1"},
    ]
    assert read_jsonl(path) == objs


def test_read_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"event": "a", "sim_time_s": 1.0}\n\n  \n{"event": "b", "sim_time_s": 2.0}\n')
    assert read_jsonl(path) == [{"event": "a", "sim_time_s": 1.0}, {"event": "b", "sim_time_s": 2.0}]


def test_monotonic_is_true_for_a_normal_run():
    _env, trace = _run_traced()
    assert trace.monotonic() is True


def test_monotonic_is_true_for_equal_timestamps_and_empty_trace():
    env = simpy.Environment()
    trace = Trace(env)
    assert trace.monotonic() is True
    trace("a")
    trace("b")
    assert trace.monotonic() is True


def test_monotonic_is_false_after_an_out_of_order_event_is_appended():
    _env, trace = _run_traced()
    trace.events.append((1.0, "late", {}))
    assert trace.monotonic() is False


def test_nan_values_are_written_as_null(tmp_path):
    env = simpy.Environment()
    trace = Trace(env)
    trace("measure", vm="vm-1", value=float("nan"), ok=1.5)
    path = tmp_path / "nan.jsonl"
    trace.write_jsonl(path)
    line = path.read_text(encoding="utf-8").strip()
    assert "NaN" not in line
    # Strict JSON (no NaN literal) must parse it.
    obj = json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert obj == {"event": "measure", "sim_time_s": 0.0, "vm": "vm-1", "value": None, "ok": 1.5}


def test_non_serialisable_values_raise_type_error(tmp_path):
    env = simpy.Environment()
    trace = Trace(env)
    trace("bad", obj=object())
    with pytest.raises(TypeError, match="not serialisable"):
        trace.write_jsonl(tmp_path / "bad.jsonl")


def test_a_finished_trace_does_not_keep_its_simulation_alive():
    # A run's result keeps its trace; the trace must not keep the environment (and through its
    # event queue every object of the simulation) alive once the run is over.
    import gc
    import weakref

    env, trace = _run_traced()
    ref = weakref.ref(env)
    del env
    gc.collect()
    assert ref() is None
    assert [e for _, e, _ in trace.events] == ["job_start", "copy_start", "copy_end"]
    assert len(list(trace.lines())) == 3


def test_lines_are_the_text_structlogs_bound_logger_renders_key_order_included():
    # the chain is run directly (not through a bound logger) for speed: the text must not change
    import structlog

    from cluster_sim.kernel.trace import _json, _nan_to_null

    env = simpy.Environment(initial_time=1.0000004)
    trace = Trace(env)
    trace("copy_start", vm="vm-1", node="n1", mib=12.25, lost=float("nan"), text="é")
    trace("done")
    rendered: list[str] = []

    class Sink:
        def info(self, line: str) -> None:
            rendered.append(line)

    log = structlog.wrap_logger(Sink(), processors=[_nan_to_null, structlog.processors.JSONRenderer(default=_json)],
                                context_class=dict)
    for t, event, ids in trace.events:
        log.info(event, sim_time_s=round(t, 6), **ids)
    assert list(trace.lines()) == rendered == [
        '{"sim_time_s": 1.0, "vm": "vm-1", "node": "n1", "mib": 12.25, "lost": null, "text": "\\u00e9", '
        '"event": "copy_start"}',
        '{"sim_time_s": 1.0, "event": "done"}',
    ]


def test_rows_are_what_the_written_lines_read_back_as_tuples_lists_and_a_top_level_nan_null(tmp_path):
    # The report draws a run's generation from its trace's rows instead of parsing the lines it
    # has just written: each row must be json.loads of its line. A tuple reads back as a list, a
    # NaN at the top as None (null), a NaN inside a list as nan (JSON's NaN), a str enum as its
    # value, a time rounded to the microsecond; spans likewise (a note only where there is one).
    import enum
    import math

    class Kind(enum.StrEnum):
        PIN = "backup_pin"

    env = simpy.Environment()
    trace = Trace(env)

    def proc():
        trace("hold", csv="CSV1", kind=Kind.PIN, at=(1, 2), lost=math.nan, inf=math.inf, deep=[math.nan, {"a": (3,)}])
        yield env.timeout(0.12345678)
        trace.open_span("k", "copy", "vm-1", "n1", 1)
        yield env.timeout(1.0)
        trace.close_span("k")
        trace.open_span("k2", "attempt", "vm-1", "n1", 1)
        yield env.timeout(0.5)
        trace.close_span("k2", "failed: lost")

    env.process(proc())
    env.run()
    trace.write_jsonl(tmp_path / "trace.jsonl")
    trace.write_spans_jsonl(tmp_path / "spans.jsonl")
    rows, read = list(trace.rows()), read_jsonl(tmp_path / "trace.jsonl")
    assert rows == read
    assert rows[0]["kind"] == "backup_pin" and type(rows[0]["kind"]) is str and rows[0]["at"] == [1, 2]
    assert rows[0]["lost"] is None and rows[0]["inf"] == math.inf and math.isnan(rows[0]["deep"][0])
    assert rows[0]["deep"][1] == {"a": [3]}
    spans = list(trace.span_rows())
    assert spans == read_jsonl(tmp_path / "spans.jsonl")
    assert spans == [
        {"phase": "copy", "vm": "vm-1", "node": "n1", "start_s": 0.123457, "end_s": 1.123457, "attempt": 1},
        {"phase": "attempt", "vm": "vm-1", "node": "n1", "start_s": 1.123457, "end_s": 1.623457, "attempt": 1,
         "note": "failed: lost"},
    ]


@pytest.mark.parametrize("scenario", ["crash-during-backup.yaml", "drain-during-backup.yaml", "rolling-upgrade.yaml"])
def test_a_run_with_faults_has_rows_that_are_its_written_lines_read_back(scenario, tmp_path):
    # every event of runs with crashes, drains and upgrades (their tuples, lists and missing numbers)
    from pathlib import Path

    import cluster_sim

    path = Path(__file__).resolve().parent.parent / "scenarios" / scenario
    sc = cluster_sim.load_scenario(path, ["run.backend=local", "run.workers=1"])
    for g in cluster_sim.run(sc).generations:
        g.trace.write_jsonl(tmp_path / "t.jsonl")
        g.trace.write_spans_jsonl(tmp_path / "s.jsonl")
        assert list(g.trace.rows()) == read_jsonl(tmp_path / "t.jsonl"), g.summary.generation
        assert list(g.trace.span_rows()) == read_jsonl(tmp_path / "s.jsonl"), g.summary.generation
        assert len(g.trace.events) > 100


def test_a_pickled_trace_comes_back_packed_and_unpacks_its_events_and_spans_where_first_read():
    import pickle

    _env, trace = _run_traced()
    trace.spans.append(("copy", "vm-1", "n1", 2.5, 2.6234567891, 1, ""))
    back = pickle.loads(pickle.dumps(trace))
    # nothing unpickled yet: the events and spans are one blob until read
    assert "events" not in back.__dict__ and "spans" not in back.__dict__
    assert back._clock is None and back._open == {}
    assert len(back) == 3  # (reading it unpacks both)
    assert back.events == trace.events and back.spans == trace.spans
    assert "_packed" not in back.__dict__
    # a trace that came packed travels again whole, read or not
    again = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(trace))))
    assert again.spans == trace.spans and [e[1] for e in again.events] == ["job_start", "copy_start", "copy_end"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = back.nothing
    # what it writes is what the original writes
    assert list(back.lines()) == list(trace.lines())


def test_lines_skip_the_chain_only_where_it_changes_nothing_nan_and_infinity_anywhere_go_through_it():
    # lines() encodes an event without a NaN or an infinity directly (the chain would leave it as
    # it is); the rest go through the chain: a NaN at the top becomes null, one inside a list stays
    # NaN (as JSON's renderer writes it), an infinity stays Infinity
    import subprocess
    import sys

    import structlog

    from cluster_sim.kernel.trace import _json, _nan_to_null

    nan, inf = float("nan"), float("inf")
    env = simpy.Environment(initial_time=2.5)
    trace = Trace(env)
    trace("plain", vm="vm-1", mib=0.1, n=3, ok=True, gone=None, where=("n1", 2))
    trace("top_nan", x=nan)
    trace("inner_nan", xs=(1.0, nan))
    trace("inf", x=inf, y=-inf)
    trace("plain_again", vm="vm-2", nested={"a": [1.5]})
    chain = (_nan_to_null, structlog.processors.JSONRenderer(default=_json))
    expected = []
    for t, event, ids in trace.events:
        line = {"sim_time_s": round(t, 6), **ids, "event": event}
        for proc in chain:
            line = proc(None, "info", line)
        expected.append(line)
    assert list(trace.lines()) == expected == [
        '{"sim_time_s": 2.5, "vm": "vm-1", "mib": 0.1, "n": 3, "ok": true, "gone": null, "where": ["n1", 2], '
        '"event": "plain"}',
        '{"sim_time_s": 2.5, "x": null, "event": "top_nan"}',
        '{"sim_time_s": 2.5, "xs": [1.0, NaN], "event": "inner_nan"}',
        '{"sim_time_s": 2.5, "x": Infinity, "y": -Infinity, "event": "inf"}',
        '{"sim_time_s": 2.5, "vm": "vm-2", "nested": {"a": [1.5]}, "event": "plain_again"}',
    ]
    # a trace without NaN or infinity is written without importing structlog at all
    code = ("import sys, simpy; from cluster_sim.kernel.trace import Trace; env = simpy.Environment(); "
            "t = Trace(env); t('a', vm='vm-1', mib=1.5); print(list(t.lines())[0]); print('structlog' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ['{"sim_time_s": 0.0, "vm": "vm-1", "mib": 1.5, "event": "a"}', "False"]


def test_an_encoding_that_stops_half_way_leaves_the_encoder_usable():
    # the C encoder notes each list and dict it is inside (its circular check) and takes them off
    # only when it finishes; stopped by a NaN it left them there, and the same list encoded again
    # read as a circular reference: the encoder empties that note when it stops
    from cluster_sim.kernel.trace import _encoder, _json

    strict = _encoder(_json, allow_nan=False)
    row = {"a": [1.0, float("nan")]}
    with pytest.raises(ValueError, match="not JSON compliant"):
        strict(row)
    row["a"][1] = 2.0
    assert strict(row) == '{"a": [1.0, 2.0]}'
