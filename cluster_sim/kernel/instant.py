"""End-of-instant hooks.

Some work must happen once per simulated instant, after every process scheduled at that
instant has run (recomputing fluid rates once for every flow that started or ended). One
deferrer serves all such hooks (two independent deferrers would keep yielding to each other
forever). Hooks run lowest priority number first; a hook may cause more events at the same
instant, so the deferrer waits for those to run before the next hook.
"""

from __future__ import annotations

from collections.abc import Callable

import simpy

FLUID = 20  # one fluid recomputation for everything that changed this instant


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes (for benchmarks)."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        super().step()


class InstantHooks:
    def __init__(self, env: simpy.Environment):
        self.env = env
        self._pending: dict[int, Callable[[], None]] = {}
        self._running = False

    def request(self, priority: int, callback: Callable[[], None]) -> None:
        self._pending[priority] = callback
        if not self._running:
            self._running = True
            self._defer()

    def _defer(self) -> None:
        ev = self.env.timeout(0)
        ev.callbacks.append(self._step)

    def _step(self, _ev: simpy.Event) -> None:
        env = self.env
        if env.peek() == env.now:
            self._defer()  # other work of this instant first
            return
        prio = min(self._pending)
        callback = self._pending.pop(prio)
        callback()
        if self._pending:
            self._defer()
        else:
            self._running = False
