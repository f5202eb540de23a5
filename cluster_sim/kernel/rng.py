"""Named random streams derived from the run seed.

Each stream is keyed by names (e.g. ("vm", "win-app-0042", "guest_freeze")), hashed into a
numpy SeedSequence spawn key. A stream depends only on the seed and its own names, so adding a
VM, or drawing more from one VM's stream, never shifts another stream's draws.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _key(names: tuple[str, ...]) -> tuple[int, ...]:
    # repr of the tuple keeps names apart: ("a", "b") and ("a\x1fb",) hash differently
    digest = hashlib.blake2b(repr(tuple(names)).encode(), digest_size=16).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


class Streams:
    def __init__(self, seed: int):
        self.seed = int(seed)
        self._cache: dict[tuple[str, ...], np.random.Generator] = {}

    def get(self, *names: str) -> np.random.Generator:
        """The generator for these names; the same object is returned on every call."""
        gen = self._cache.get(names)
        if gen is None:
            ss = np.random.SeedSequence(entropy=self.seed, spawn_key=_key(names))
            gen = np.random.Generator(np.random.PCG64(ss))
            self._cache[names] = gen
        return gen
