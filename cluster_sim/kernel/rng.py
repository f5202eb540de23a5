"""Named random streams derived from the run seed.

Each stream is keyed by names (e.g. ("vm", "win-app-0042", "guest_freeze")), hashed into a
numpy SeedSequence spawn key. A stream depends only on the seed and its own names, so adding a
VM, or drawing more from one VM's stream, never shifts another stream's draws.

Making a stream costs about 25-55 us, mostly numpy's SeedSequence (its entropy checked and mixed
in Python-level steps). A run makes one or two per VM, so at 8,000 VMs that was about 0.8 s of a
generation. Streams asked for as a group (`get_many`, or the first of a group announced with
`expect`) are made together: the same SeedSequence mixing (`_pcg64_seeds`) done on arrays, one
row per stream, which gives the PCG64 seeds numpy's own SeedSequence gives (a test compares
them), at about 4 us a stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from numpy.random.bit_generator import ISeedSequence


def _digest(names: tuple[str, ...]) -> bytes:
    # repr of the tuple keeps names apart: ("a", "b") and ("a\x1fb",) hash differently
    return hashlib.blake2b(repr(tuple(names)).encode(), digest_size=16).digest()


def _key(names: tuple[str, ...]) -> tuple[int, ...]:
    """The stream's spawn key: its names' digest as four 32-bit words, little-endian."""
    digest = _digest(names)
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


# numpy's SeedSequence (numpy/random/bit_generator.pyx): its pool of 4 words and its constants
_POOL = 4
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _XSHIFT, _M32 = 0xCA01F9DD, 0x4973F715, 16, 0xFFFFFFFF


def _seed_words(seed: int) -> list[int]:
    """The seed as SeedSequence takes an int: 32-bit words, least significant first ([0] for 0)."""
    if seed < 0:
        raise ValueError("a seed must be >= 0")
    words = [seed & _M32]
    seed >>= 32
    while seed:
        words.append(seed & _M32)
        seed >>= 32
    return words


def _pcg64_seeds(seed: int, keys: np.ndarray) -> np.ndarray:
    """What `SeedSequence(entropy=seed, spawn_key=key).generate_state(4, np.uint64)` gives for
    each row of `keys` ((n, 4) spawn-key words), as an (n, 4) uint64 array: the entropy assembled
    (the seed's words padded to the pool's size, then the key's), mixed into the pool, and the
    state drawn from it, each step on a column of all rows at once. Words are kept in uint64 and
    masked to 32 bits after each product, as the uint32 arithmetic of numpy's own code wraps."""
    run = _seed_words(seed)
    run += [0] * (_POOL - len(run))
    n = len(keys)
    entropy = [np.full(n, w, dtype=np.uint64) for w in run] + [keys[:, j].astype(np.uint64) for j in range(4)]
    hash_a = _INIT_A

    def hashmix(v: np.ndarray) -> np.ndarray:
        nonlocal hash_a
        v = v ^ np.uint64(hash_a)
        hash_a = (hash_a * _MULT_A) & _M32
        v = (v * np.uint64(hash_a)) & np.uint64(_M32)
        return v ^ (v >> np.uint64(_XSHIFT))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = (np.uint64(_MIX_L) * x - np.uint64(_MIX_R) * y) & np.uint64(_M32)
        return r ^ (r >> np.uint64(_XSHIFT))

    pool = [hashmix(entropy[i]) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_POOL, len(entropy)):
        for dst in range(_POOL):
            pool[dst] = mix(pool[dst], hashmix(entropy[src]))
    hash_b = _INIT_B
    out = np.empty((n, 8), dtype=np.uint32)
    for i in range(8):  # 8 words of 32 bits: 4 of 64, little-endian
        v = pool[i % _POOL] ^ np.uint64(hash_b)
        hash_b = (hash_b * _MULT_B) & _M32
        v = (v * np.uint64(hash_b)) & np.uint64(_M32)
        out[:, i] = v ^ (v >> np.uint64(_XSHIFT))
    return out.view("<u8")


class _Seeded(ISeedSequence):
    """A seed sequence whose state is already drawn (a row of `_pcg64_seeds`), for PCG64."""

    __slots__ = ("state",)

    def __init__(self, state: np.ndarray):
        self.state = state

    def generate_state(self, n_words: int, dtype: type = np.uint32) -> np.ndarray:
        if n_words != 4 or np.dtype(dtype) != np.uint64:
            raise ValueError("drawn for PCG64 only: 4 words of uint64")
        return self.state


class Streams:
    def __init__(self, seed: int):
        self.seed = int(seed)
        self._cache: dict[tuple[str, ...], np.random.Generator] = {}
        self._groups: dict[tuple[str, ...], list[tuple[str, ...]]] = {}  # (expect) names -> its group

    def get(self, *names: str) -> np.random.Generator:
        """The generator for these names; the same object is returned on every call."""
        gen = self._cache.get(names)
        if gen is None:
            group = self._groups.pop(names, None)
            if group is not None:
                self.get_many(group)
                return self._cache[names]
            ss = np.random.SeedSequence(entropy=self.seed, spawn_key=_key(names))
            gen = np.random.Generator(np.random.PCG64(ss))
            self._cache[names] = gen
        return gen

    def get_many(self, group: list[tuple[str, ...]]) -> list[np.random.Generator]:
        """`get` of each names in `group`, the new ones made together (see the module docstring)."""
        cache = self._cache
        new = [names for names in dict.fromkeys(group) if names not in cache]
        if new:
            digests = b"".join(map(_digest, new))  # (each stream's _key, as words below)
            seeds = _pcg64_seeds(self.seed, np.frombuffer(digests, dtype="<u4").reshape(-1, 4))
            for names, row in zip(new, seeds, strict=True):
                cache[names] = np.random.Generator(np.random.PCG64(_Seeded(row)))
                self._groups.pop(names, None)
        return [cache[names] for names in group]

    def expect(self, group: Iterable[tuple[str, ...]]) -> None:
        """These streams are likely to be asked for one by one: the first of them asked makes all
        of them (those not made yet) together. Which draws any stream gives does not change."""
        group = list(group)
        for names in group:
            self._groups[names] = group
