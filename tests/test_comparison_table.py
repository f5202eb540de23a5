"""The comparison table marks honestly: never a generation with more failed VMs, never a
difference under 2 %; a schedule shows the full's window and the mean incremental window, never
their sum; comparison.csv holds plain numbers that read back as numbers."""

from __future__ import annotations

import csv
import functools
import io

import pytest
from backup_helpers import run_gens, scenario_dict, template

from cluster_sim.report.table import best_rows, columns_for, comparison_csv, comparison_md
from cluster_sim.results import Outcomes, Summary


@functools.cache
def _base() -> Summary:
    d = scenario_dict(fleet=[template("win", count=2, size_gib=1)], nodes=1, csvs=1, backup={"verify": False})
    return run_gens(d, ["ws2016"])["ws2016"].summary


def _s(gen: str, window_h: float, failed: int = 0, snaps: int = 10, **kw) -> Summary:  # type: ignore[no-untyped-def]
    b = _base()
    return b.model_copy(update={"generation": gen, "backup_window_s": window_h * 3600, "hw_snapshots_created": snaps,
                                "outcomes": Outcomes(app_consistent=100 - failed, failed=failed), **kw})


def test_the_shortest_window_is_marked_when_it_leads_by_2_percent_or_more() -> None:
    rows = [_s("ws2012r2", 10.0), _s("ws2016", 9.7)]  # 3 % shorter
    assert best_rows(rows)["window (h)"] == {1}


def test_a_difference_under_2_percent_is_a_tie_and_nothing_is_marked() -> None:
    rows = [_s("ws2012r2", 10.0), _s("ws2016", 9.85)]  # 1.5 % apart
    assert "window (h)" not in best_rows(rows)
    # three generations, two within 2 % of the best: both lead together, the third is not marked
    rows = [_s("ws2008r2", 12.0), _s("ws2012r2", 10.0), _s("ws2016", 9.9)]
    assert best_rows(rows)["window (h)"] == {1, 2}


def test_a_generation_with_more_failed_vms_is_never_marked_best() -> None:
    # ws2012r2 fails 336 VMs and so finishes earlier and takes fewer snapshots: no mark for it
    rows = [_s("ws2012r2", 5.0, failed=336, snaps=400), _s("ws2016", 16.0, failed=0, snaps=8)]
    best = best_rows(rows)
    assert "window (h)" not in best  # only ws2016 is eligible: nothing to compare it with
    assert best["failed"] == {1}
    rows.append(_s("ws2012", 17.0, failed=0, snaps=792))
    best = best_rows(rows)
    assert best["window (h)"] == {1}  # 16.0 beats 17.0 (6 %); the 5.0 h with failures does not count
    assert best["hw snapshots"] == {1}


def test_equal_zeros_tie_and_zero_against_a_count_is_a_difference() -> None:
    rows = [_s("ws2012r2", 10.0, hold_writes_overruns=0), _s("ws2016", 10.0, hold_writes_overruns=0)]
    assert "hold-writes overruns" not in best_rows(rows)
    rows = [_s("ws2012r2", 10.0, hold_writes_overruns=3), _s("ws2016", 10.0, hold_writes_overruns=0)]
    assert best_rows(rows)["hold-writes overruns"] == {1}


def test_comparison_csv_is_plain_numbers_with_units_in_the_headers() -> None:
    rows = [_s("ws2012r2", 15.0, snaps=1400, retries=12), _s("ws2016", 15.5, snaps=8)]
    text = comparison_csv(rows)
    assert "1,400" not in text
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["generation"] for r in table] == ["ws2012r2", "ws2016"]
    assert float(table[0]["window (h)"]) == pytest.approx(15.0)
    assert int(table[0]["hw snapshots"]) == 1400 and int(table[0]["retries"]) == 12
    assert int(table[1]["audit violations"]) == 0
    for r in table:  # every column but the generation reads as a number (or is empty: no data)
        for k, v in r.items():
            if k != "generation" and v != "":
                float(v)


def test_a_schedule_shows_the_fulls_window_and_the_mean_incremental_window_never_their_sum() -> None:
    d = scenario_dict(fleet=[template("win", count=2, size_gib=1)], nodes=1, csvs=1, backup={
        "verify": False, "schedule": [{"at_s": 0, "mode": "full"}, {"at_s": 86400}, {"at_s": 172800}]})
    d["run"]["until_s"] = 3 * 86400
    s = run_gens(d, ["ws2016"])["ws2016"].summary
    jobs = s.jobs
    assert [j.mode for j in jobs] == ["full", "incremental", "incremental"]
    headers = [c.header for c in columns_for([s])]
    assert "window (h)" not in headers
    assert {"full window (h)", "incr. window, mean (h)"} <= set(headers)
    row = next(csv.DictReader(io.StringIO(comparison_csv([s]))))
    assert float(row["full window (h)"]) == pytest.approx(jobs[0].backup_window_s / 3600, abs=1e-6)
    incr = (jobs[1].backup_window_s + jobs[2].backup_window_s) / 2 / 3600
    assert float(row["incr. window, mean (h)"]) == pytest.approx(incr, abs=1e-6)
    assert s.backup_window_s == jobs[0].backup_window_s  # the summary's window is the full's, not a sum
    assert s.full_window_s == jobs[0].backup_window_s
    assert s.incremental_window_s == pytest.approx(incr * 3600, abs=1e-5)
    assert "Per job" not in comparison_md([s])  # (the CLI appends the per-job table itself)


def test_pandas_reads_comparison_csv_with_numeric_dtypes(tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    f = tmp_path / "comparison.csv"
    f.write_text(comparison_csv([_s("ws2012r2", 15.0, snaps=1400), _s("ws2016", 15.5, snaps=8)]))
    df = pd.read_csv(f)
    assert df["generation"].tolist() == ["ws2012r2", "ws2016"]
    for col in df.columns:
        if col != "generation":
            assert pd.api.types.is_numeric_dtype(df[col]), col
    assert df["hw snapshots"].tolist() == [1400, 8]


def test_run_result_to_pandas_gives_one_row_per_generation_and_one_per_vm() -> None:
    pytest.importorskip("pandas")
    import cluster_sim

    d = scenario_dict(fleet=[template("win", count=3, size_gib=1)], nodes=1, csvs=1, backup={"verify": False})
    from cluster_sim.scenario import scenario_from_dict

    res = cluster_sim.run(scenario_from_dict(d), backend="local", generations=["ws2012r2", "ws2016"])
    gens = res.to_pandas()
    assert gens["generation"].tolist() == ["ws2012r2", "ws2016"]
    assert gens["hw_snapshots_created"].tolist() == [3, 1]
    assert "io_latency_ms.backup_p99" in gens.columns and "outcomes.app_consistent" in gens.columns
    vms = res.to_pandas("vms")
    assert len(vms) == 6 and set(vms["generation"]) == {"ws2012r2", "ws2016"}
    assert vms["bytes_copied_mib"].dtype.kind == "f"
    assert len(res.to_pandas("csvs")) == 2
    with pytest.raises(ValueError, match="not one of"):
        res.to_pandas("nodes")
