"""Python's cyclic garbage collector during a simulation and while its results are written.

A simulation allocates objects by the million (events, flows, trace records) and keeps a large
heap alive (the cluster, its groups, the trace). With Python's default thresholds (a young
collection every 700 net allocations, a full one after ten middle ones) the collector rescans
that heap again and again: 9 full collections and 1,114 young ones, 3.2 s of 37.7 s, in one
ws2012 generation of 8000vm-64node (measured with gc.callbacks). With a young collection every
20,000 net allocations most objects are freed by their reference count before a collection
looks at them, and no full collection happens during the run; one at its end frees what it left
(without it, a process running a second generation kept the first one's garbage: 2,197 MiB
instead of 1,697 for the four generations of 8000vm-64node): 1.1 s in all.

Collections never change a result (nothing in the model depends on when a cycle is freed; the
golden files are byte-identical with and without), only the time spent in them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

YOUNG_COLLECTION_EVERY_OBJECTS = 20_000  # [P] net allocations between two young collections (Python: 700)

# Whether a block's garbage is worth a full collection at its end: False in the pool worker running
# a run's last unfinished generation (simulation.executors): no other generation runs beside it,
# its process ends with the pool, and the collection took about 1 s at 8,000 VMs, on the run's
# critical path. Anywhere else True: the process goes on, or another generation needs the memory.
collect_after: Callable[[], bool] = lambda: True  # noqa: E731 - replaced by the pool's initializer


@contextmanager
def fewer_collections(young_every_objects: int = YOUNG_COLLECTION_EVERY_OBJECTS) -> Iterator[None]:
    """The block runs with a young collection every `young_every_objects` net allocations (the
    older generations' thresholds as they were); the thresholds are restored after, however the
    block ends; if objects of the block reached the oldest generation, one full collection then
    frees the garbage the block left."""
    before = gc.get_threshold()
    older = _older_collections()
    gc.set_threshold(max(young_every_objects, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if _older_collections() != older and collect_after():
            # objects of the block reached the oldest generation, where only a full collection
            # frees them: its cyclic garbage (a finished simulation, hundreds of MiB at 8,000 VMs)
            # freed now, not after the next run has grown the heap by as much again. A short run
            # (a study's) never got there: its garbage goes with the next young collections.
            gc.collect()


def _older_collections() -> tuple[int, int]:
    stats = gc.get_stats()
    return stats[1]["collections"], stats[2]["collections"]
