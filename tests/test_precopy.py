"""The pure pre-copy model `cluster_sim.cluster.migration.precopy` against hand-worked cases,
its closed form (Liu et al. 2011, in the module docstring) and properties over random inputs.

Notation in the comments: V memory (MiB), R rate (MiB/s), D dirty rate (MiB/s), lam = D / R,
T the allowed blackout (max_downtime_s), cap = working_set_fraction * V.
A round sends `to_send` in t = to_send / R and leaves min(D * t, cap) dirty.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster_sim.cluster.migration import precopy


# ---- (a) the converging textbook case -------------------------------------------------------------
# V = 1000, R = 100, D = 20, T = 0.3 -> lam = 0.2, cap = 900 (never binds)
#   round 1: send 1000 in 10 s  -> dirty 200, 200/100 = 2.0 s  > 0.3
#   round 2: send  200 in  2 s  -> dirty  40,  40/100 = 0.4 s  > 0.3
#   round 3: send   40 in 0.4 s -> dirty   8,   8/100 = 0.08 s <= 0.3 -> stop ("threshold")
#   sent = 1000 + 200 + 40 + 8 (stop-and-copy) = 1248; downtime 0.08 s;
#   duration = 10 + 2 + 0.4 + 0.08 = 12.48 s
def test_converging_case_takes_three_rounds_sends_1248_mib_with_80_ms_blackout() -> None:
    r = precopy(1000, 100, 20, max_downtime_s=0.3)
    assert r.rounds == 3
    assert r.sent_mib == pytest.approx(1248.0)
    assert r.downtime_s == pytest.approx(0.08)
    assert r.duration_s == pytest.approx(12.48)
    assert r.converged is True
    assert r.stop_reason == "threshold"


# Closed form: n = ceil(log(R T / V) / log(lam)) = ceil(log(0.03) / log(0.2)) = ceil(2.18) = 3
#   sent = V (1 - lam^(n+1)) / (1 - lam) = 1000 (1 - 0.0016) / 0.8 = 1248
#   downtime = V lam^n / R = 1000 * 0.008 / 100 = 0.08; duration = sent / R = 12.48
@pytest.mark.parametrize(
    ("v", "r", "d", "t"),
    [(1000, 100, 20, 0.3), (8192, 1150, 200, 0.3), (4096, 1150, 400, 0.3), (2048, 500, 100, 0.05),
     (16384, 1150, 50, 1.0)],
)
def test_precopy_equals_the_closed_form_when_no_cap_binds(v, r, d, t) -> None:
    lam = d / r
    n = max(1, math.ceil(math.log(r * t / v) / math.log(lam)))
    sent = v * (1 - lam ** (n + 1)) / (1 - lam)
    downtime = v * lam**n / r
    res = precopy(v, r, d, max_downtime_s=t, working_set_fraction=1.0)
    assert res.stop_reason == "threshold"
    assert res.rounds == n
    assert res.sent_mib == pytest.approx(sent, rel=1e-12)
    assert res.downtime_s == pytest.approx(downtime, rel=1e-12)
    assert res.duration_s == pytest.approx(sent / r, rel=1e-12)


# ---- (b) zero dirtying ---------------------------------------------------------------------------
# D = 0: one round of V / R, nothing left to send -> blackout is only the resume time
def test_zero_dirty_rate_is_one_round_sending_memory_once_with_no_blackout() -> None:
    r = precopy(1000, 100, 0.0, max_downtime_s=0.3)
    assert (r.rounds, r.sent_mib, r.downtime_s, r.duration_s) == (1, 1000.0, 0.0, 10.0)
    assert r.converged and r.stop_reason == "threshold"
    r = precopy(1000, 100, 0.0, max_downtime_s=0.3, resume_s=0.05)
    assert r.downtime_s == pytest.approx(0.05)
    assert r.duration_s == pytest.approx(10.05)


# ---- (c) the working-set cap binds -------------------------------------------------------------
# V = 1000, R = 100, D = 50, T = 0.3, working set 0.1 -> cap = 100
#   round 1: send 1000 in 10 s  -> dirty min(500, 100) = 100 (cap binds), 1.0 s  > 0.3
#   round 2: send  100 in  1 s  -> dirty min( 50, 100) =  50,              0.5 s  > 0.3
#   round 3: send   50 in 0.5 s -> dirty 25,                               0.25 s <= 0.3
#   sent = 1000 + 100 + 50 + 25 = 1175; downtime 0.25; duration 11.75
# (without the cap: dirty 500 -> 250 -> 125 -> 62.5 -> 31.25 (0.3125 s > 0.3) -> 15.625, 6 rounds,
#  sent 1000 + 500 + 250 + 125 + 62.5 + 31.25 + 15.625 = 1984.375)
def test_working_set_cap_limits_what_a_round_leaves_to_resend() -> None:
    r = precopy(1000, 100, 50, max_downtime_s=0.3, working_set_fraction=0.1)
    assert r.rounds == 3
    assert r.sent_mib == pytest.approx(1175.0)
    assert r.downtime_s == pytest.approx(0.25)
    assert r.duration_s == pytest.approx(11.75)
    assert r.converged and r.stop_reason == "threshold"
    uncapped = precopy(1000, 100, 50, max_downtime_s=0.3, working_set_fraction=1.0)
    assert uncapped.rounds == 6
    assert uncapped.sent_mib == pytest.approx(1984.375)


# V = 1000, R = 100, D = 300 (lam = 3, would never converge), working set 0.02 -> cap = 20:
#   round 1: 1000 in 10 s -> dirty min(3000, 20) = 20, 0.2 s <= 0.3 -> stop after one round
def test_small_working_set_lets_a_fast_dirtier_converge() -> None:
    r = precopy(1000, 100, 300, max_downtime_s=0.3, working_set_fraction=0.02)
    assert (r.rounds, r.converged, r.stop_reason) == (1, True, "threshold")
    assert r.sent_mib == pytest.approx(1020.0)
    assert r.downtime_s == pytest.approx(0.2)


# ---- (d) non-converging: D >= R ----------------------------------------------------------------
# V = 1000, R = 100, D = 100, T = 0.3, cap 900, factor 3 (3000 MiB at most), rounds 30; the
# total is checked after each round, as Xen does (sent so far > 3000 stops):
#   round 1: send 1000 (10 s) -> dirty min(1000, 900) = 900 (9 s > 0.3); sent 1000 <= 3000
#   round 2: send  900 (9 s)  -> dirty 900;                                sent 1900 <= 3000
#   round 3: send  900 (9 s)  -> dirty 900;                                sent 2800 <= 3000
#   round 4: send  900 (9 s)  -> dirty 900;                                sent 3700 >  3000 -> max_total
#   sent = 3700 + 900 = 4600; downtime = 900 / 100 = 9 s; duration = 10 + 9 + 9 + 9 + 9 = 46 s
def test_dirty_rate_at_link_rate_stops_at_max_total_after_the_round_that_passes_it() -> None:
    r = precopy(1000, 100, 100, max_downtime_s=0.3)
    assert r.stop_reason == "max_total"
    assert r.converged is False
    assert r.rounds == 4
    assert r.sent_mib == pytest.approx(4600.0)
    assert r.downtime_s == pytest.approx(900 / 100)
    assert r.duration_s == pytest.approx(46.0)


def test_dirty_rate_above_link_rate_does_not_converge_and_blackout_is_remainder_over_rate() -> None:
    # D = 250 > R = 100: every round leaves the cap (900) -> same sequence as above
    r = precopy(1000, 100, 250, max_downtime_s=0.3)
    assert (r.stop_reason, r.converged, r.rounds) == ("max_total", False, 4)
    assert r.downtime_s == pytest.approx(9.0)


def test_max_total_is_checked_after_the_round_not_predicted_before_it() -> None:
    # factor 2.8: sent 2800 after round 3 is not above 2800 -> a 4th round; factor 2.79 stops at 3
    assert precopy(1000, 100, 100, max_downtime_s=0.3, max_total_factor=2.8).rounds == 4
    assert precopy(1000, 100, 100, max_downtime_s=0.3, max_total_factor=2.79).rounds == 3


# ---- (e) the round cap ---------------------------------------------------------------------------
# as (d) with max_rounds = 2: round 2 hits the cap before the total check
#   sent = 1000 + 900 + 900 (stop-and-copy) = 2800; downtime 9 s; duration 10 + 9 + 9 = 28 s
def test_max_rounds_stops_pre_copy_and_reports_not_converged() -> None:
    r = precopy(1000, 100, 100, max_downtime_s=0.3, max_rounds=2)
    assert (r.stop_reason, r.converged, r.rounds) == ("max_rounds", False, 2)
    assert r.sent_mib == pytest.approx(2800.0)
    assert r.downtime_s == pytest.approx(9.0)
    assert r.duration_s == pytest.approx(28.0)


# max_rounds = 1 with the converging case (a): stop after round 1 with 200 MiB left -> 2 s blackout
def test_max_rounds_one_pauses_after_the_first_full_copy() -> None:
    r = precopy(1000, 100, 20, max_downtime_s=0.3, max_rounds=1)
    assert (r.stop_reason, r.converged, r.rounds) == ("max_rounds", False, 1)
    assert r.sent_mib == pytest.approx(1200.0)
    assert r.downtime_s == pytest.approx(2.0)


# ---- (f) resume time -----------------------------------------------------------------------------
# case (a) + resume 0.05 s: downtime 0.08 + 0.05 = 0.13, duration 12.48 + 0.05 = 12.53, same rounds
def test_resume_time_adds_to_both_downtime_and_duration() -> None:
    base = precopy(1000, 100, 20, max_downtime_s=0.3)
    r = precopy(1000, 100, 20, max_downtime_s=0.3, resume_s=0.05)
    assert r.downtime_s == pytest.approx(0.13)
    assert r.duration_s == pytest.approx(12.53)
    assert r.downtime_s - base.downtime_s == pytest.approx(0.05)
    assert r.duration_s - base.duration_s == pytest.approx(0.05)
    assert (r.rounds, r.sent_mib, r.stop_reason) == (base.rounds, base.sent_mib, base.stop_reason)


# ---- (g) invalid arguments -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_mib": 0},
        {"memory_mib": -1},
        {"rate_mib_s": 0},
        {"rate_mib_s": -5},
        {"dirty_mib_s": -1},
        {"max_downtime_s": -0.1},
        {"max_rounds": 0},
        {"max_total_factor": 0.5},
    ],
)
def test_invalid_pre_copy_arguments_raise_value_error(kwargs) -> None:
    args = {"memory_mib": 1000, "rate_mib_s": 100, "dirty_mib_s": 20}
    args.update(kwargs)
    with pytest.raises(ValueError):
        precopy(**args)


# The scenario model only allows working_set_fraction in (0, 1] and resume_s >= 0; the pure
# function should refuse the same (a negative resume gives a negative blackout).
@pytest.mark.parametrize(
    "kwargs",
    [{"working_set_fraction": 0.0}, {"working_set_fraction": -0.5}, {"working_set_fraction": 1.5},
     {"resume_s": -1.0}],
)
def test_out_of_range_working_set_or_negative_resume_raise_value_error(kwargs) -> None:
    with pytest.raises(ValueError):
        precopy(1000, 100, 20, **kwargs)


# ---- properties ------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    memory=st.floats(1.0, 1e6),
    rate=st.floats(1.0, 1e5),
    dirty=st.floats(0.0, 2e5),
    max_downtime=st.floats(0.0, 10.0),
    max_rounds=st.integers(1, 50),
    factor=st.floats(1.0, 10.0),
    ws=st.floats(0.01, 1.0),
    resume=st.floats(0.0, 1.0),
)
def test_precopy_properties_hold_for_any_valid_input(memory, rate, dirty, max_downtime, max_rounds, factor, ws,
                                                     resume) -> None:
    r = precopy(memory, rate, dirty, max_downtime_s=max_downtime, max_rounds=max_rounds,
                max_total_factor=factor, working_set_fraction=ws, resume_s=resume)
    assert r.sent_mib >= memory
    assert r.duration_s >= r.sent_mib / rate * (1 - 1e-12)
    assert r.duration_s == pytest.approx(r.sent_mib / rate + resume, rel=1e-9, abs=1e-12)
    assert 1 <= r.rounds <= max_rounds
    assert r.downtime_s >= resume
    assert r.stop_reason in ("threshold", "max_rounds", "max_total")
    assert r.converged == (r.stop_reason == "threshold")
    if r.converged:
        assert r.downtime_s <= max_downtime + resume + 1e-12
    # what is left for the stop-and-copy never exceeds the working set
    assert (r.downtime_s - resume) * rate <= ws * memory * (1 + 1e-9)
