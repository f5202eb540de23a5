"""Tests for named random streams derived from the run seed."""

from __future__ import annotations

import numpy as np

from cluster_sim.kernel.rng import Streams


def test_get_returns_the_same_generator_object_for_the_same_names():
    s = Streams(7)
    g = s.get("vm", "win-app-0042", "guest_freeze")
    assert s.get("vm", "win-app-0042", "guest_freeze") is g
    assert s.get("vm", "win-app-0042", "other") is not g


def test_repeated_get_continues_the_same_stream_rather_than_restarting_it():
    s = Streams(7)
    first = s.get("a").random(3)
    second = s.get("a").random(3)
    fresh = Streams(7).get("a").random(6)
    np.testing.assert_array_equal(np.concatenate([first, second]), fresh)


def test_same_seed_and_names_give_identical_draws():
    a = Streams(12345).get("vm", "lin-db-0001", "crash").random(10)
    b = Streams(12345).get("vm", "lin-db-0001", "crash").random(10)
    np.testing.assert_array_equal(a, b)


def test_different_names_give_different_draws():
    s = Streams(12345)
    a = s.get("vm", "lin-db-0001", "crash").random(10)
    b = s.get("vm", "lin-db-0002", "crash").random(10)
    c = s.get("vm", "lin-db-0001", "freeze").random(10)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(b, c)


def test_name_order_matters():
    s = Streams(3)
    assert not np.array_equal(s.get("x", "y").random(5), s.get("y", "x").random(5))


def test_drawing_from_one_stream_does_not_shift_another_stream():
    s = Streams(99)
    # Touch stream B heavily (before and after A is created) ...
    s.get("B").random(1000)
    a_first = s.get("A").random(5)
    s.get("B").standard_normal(500)
    a_next = s.get("A").random(5)
    # ... A's draws equal those of a fresh Streams that never touched B.
    fresh = Streams(99).get("A").random(10)
    np.testing.assert_array_equal(np.concatenate([a_first, a_next]), fresh)


def test_creating_more_streams_does_not_shift_existing_ones():
    s = Streams(5)
    for i in range(50):
        s.get("vm", f"extra-{i}").random()
    np.testing.assert_array_equal(s.get("vm", "target").random(8), Streams(5).get("vm", "target").random(8))


def test_different_seed_changes_draws():
    a = Streams(1).get("vm", "x").random(10)
    b = Streams(2).get("vm", "x").random(10)
    assert not np.array_equal(a, b)


def test_seed_is_stored_as_int():
    s = Streams(np.int64(42))
    assert s.seed == 42
    assert type(s.seed) is int
    np.testing.assert_array_equal(s.get("a").random(4), Streams(42).get("a").random(4))
