"""End-of-instant hooks.

Some work must happen once per simulated instant, after every process scheduled at that
instant has run: batching node calls into one round trip, recomputing fluid rates once. A
single deferrer process serves all such hooks (two independent deferrers would keep yielding
to each other forever). Hooks run lowest priority number first; a hook may cause more events
at the same instant, so the deferrer waits for those to run before the next hook.
"""

from __future__ import annotations

from collections.abc import Callable

import simpy

NODE_CALLS = 10  # node call batches first: their results resume processes that start flows
FLUID = 20  # then one fluid recomputation for everything that changed this instant


class InstantHooks:
    def __init__(self, env: simpy.Environment):
        self.env = env
        self._pending: dict[int, Callable[[], None]] = {}
        self._running = False

    def request(self, priority: int, callback: Callable[[], None]) -> None:
        self._pending[priority] = callback
        if not self._running:
            self._running = True
            self.env.process(self._run())

    def _run(self):  # type: ignore[no-untyped-def]
        env = self.env
        while self._pending:
            yield env.timeout(0)
            if env.peek() == env.now:
                continue  # other work of this instant first
            prio = min(self._pending)
            callback = self._pending.pop(prio)
            callback()
        self._running = False
