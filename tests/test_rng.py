"""Tests for named random streams derived from the run seed."""

from __future__ import annotations

import numpy as np
import pytest

from cluster_sim.kernel.rng import Streams, _key, _pcg64_seeds


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


def _numpy_own(seed: int, names: tuple[str, ...]) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=_key(names))))


@pytest.mark.parametrize("seed", [0, 1, 7, 2**32 - 1, 2**32, 2**64 + 12345, 3**90])
def test_streams_made_together_have_numpy_seedsequences_pcg64_state_and_draws(seed):
    names = [("vm", f"win-app-{i:04d}", "data") for i in range(300)] + [("a",), ("x", "y"), ("vm", "é", "torn")]
    made = Streams(seed).get_many(names)
    for nm, gen in zip(names, made, strict=True):
        ref = _numpy_own(seed, nm)
        assert gen.bit_generator.state == ref.bit_generator.state, nm
    # and they draw the same numbers, of several kinds
    for i in (0, 150, 299, 301):
        ref = _numpy_own(seed, names[i])
        np.testing.assert_array_equal(made[i].random(5), ref.random(5))
        np.testing.assert_array_equal(made[i].integers(0, 1000, 7), ref.integers(0, 1000, 7))
        np.testing.assert_array_equal(made[i].standard_normal(3), ref.standard_normal(3))


def test_the_seedsequence_mix_on_arrays_matches_numpy_for_a_hand_checked_key():
    # seed 42, spawn key (1, 2, 3, 4): numpy's generate_state(4, uint64) is the reference
    got = _pcg64_seeds(42, np.array([[1, 2, 3, 4]], dtype=np.uint32))
    ref = np.random.SeedSequence(entropy=42, spawn_key=(1, 2, 3, 4)).generate_state(4, np.uint64)
    np.testing.assert_array_equal(got[0], ref)
    assert got.dtype == np.uint64 and got.shape == (1, 4)


def test_get_many_returns_the_cached_generator_for_names_already_made_and_keeps_order():
    s = Streams(11)
    a = s.get("vm", "a", "data")
    a.random(3)  # a stream drawn from is not made again
    got = s.get_many([("vm", "b", "data"), ("vm", "a", "data"), ("vm", "b", "data")])
    assert got[1] is a
    assert got[0] is got[2] is s.get("vm", "b", "data")
    np.testing.assert_array_equal(got[0].random(4), Streams(11).get("vm", "b", "data").random(4))


def test_an_expected_group_is_made_at_the_first_get_and_gives_the_same_draws_as_one_by_one():
    s = Streams(5)
    group = [("vm", f"v{i}", "guest_freeze") for i in range(20)]
    s.expect(group)
    assert not s._cache  # nothing made until asked
    g7 = s.get("vm", "v7", "guest_freeze")
    assert len(s._cache) == 20  # the whole group made with the first one asked
    assert s.get("vm", "v3", "guest_freeze") is s._cache[("vm", "v3", "guest_freeze")]
    np.testing.assert_array_equal(g7.standard_normal(6), Streams(5).get("vm", "v7", "guest_freeze").standard_normal(6))
    # names outside the group are made alone, as before
    np.testing.assert_array_equal(s.get("vm", "v7", "torn").random(3), Streams(5).get("vm", "v7", "torn").random(3))


def test_a_negative_seed_is_refused_as_numpy_refuses_it():
    with pytest.raises(ValueError):
        Streams(-1).get_many([("a",)])
    with pytest.raises(ValueError):
        Streams(-1).get("a")
