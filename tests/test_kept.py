"""kernel/kept.py: the few values a process keeps for the next ask (placements, disks' first state)."""

from __future__ import annotations

from cluster_sim.kernel.kept import Kept


def test_at_most_size_values_kept_the_least_recently_asked_dropped_first():
    kept: Kept[str] = Kept(2)
    assert kept.get("a") is None
    assert kept.put("a", "A") == "A"
    kept.put("b", "B")
    assert kept.get("a") == "A"  # a asked: b is now the least recently asked
    kept.put("c", "C")  # three: b goes
    assert (kept.get("b"), kept.get("a"), kept.get("c"), len(kept)) == (None, "A", "C", 2)
    kept.put("a", "A2")  # put again: the new value, most recent
    kept.put("d", "D")  # c goes
    assert (kept.get("c"), kept.get("a"), kept.get("d")) == (None, "A2", "D")
    kept.clear()
    assert len(kept) == 0 and kept.get("a") is None


def test_a_size_of_one_keeps_only_the_last_put():
    kept: Kept[int] = Kept(1)
    kept.put(("x", 1), 1)
    kept.put(("x", 2), 2)
    assert (kept.get(("x", 1)), kept.get(("x", 2)), len(kept)) == (None, 2, 1)
