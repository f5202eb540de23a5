"""A few values kept for the next ask: at most `size`, the one asked least recently dropped first.

For work a process would otherwise do again with the same inputs: a fleet's placement (placed when a
scenario is validated and by each generation, scenario/placement.py) and the VMs' disks as they
start (a pool worker's second generation of a scenario, data/plane.py). `functools.lru_cache` does
not fit either: the scenario is not hashable (its key is made from what is read), and the disks'
first state is made from the run's random streams, not from the key alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Kept(Generic[V]):
    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        """The value kept under `key` (now the most recently asked), or None."""
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> V:
        """Keep `value` under `key`, dropping the least recently asked beyond `size`; returns it."""
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.size:
            self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)
