"""End-of-instant hooks.

Some work must happen once per simulated instant, after every process scheduled at that
instant has run (recomputing fluid rates once for every flow that started or ended). One
deferrer serves all such hooks (two independent deferrers would keep yielding to each other
forever). Hooks run lowest priority number first; a hook may cause more events at the same
instant, so the deferrer waits for those to run before the next hook.

The deferrer is an event of SimPy priority `LATE`, after URGENT (0) and NORMAL (1): SimPy takes
events by (time, priority, order of scheduling), so it comes after every other event of its
instant, those scheduled after it too. (It was a timeout of 0, which came back to the end of the
queue as long as other events of the instant were there: 80,000 empty steps of 462,000 in a
ws2012 run at 8,000 VMs.) The other events run in the same order: the deferrer's steps took
places in SimPy's count of scheduled events, and that count only orders events of the same time
and priority.
"""

from __future__ import annotations

from collections.abc import Callable

import simpy

FLUID = 20  # one fluid recomputation for everything that changed this instant
LATE = 2  # the deferrer's SimPy priority: after URGENT (0) and NORMAL (1) events of the same instant


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
        _Late(self.env, self._step)

    def _step(self, _ev: simpy.Event) -> None:
        prio = min(self._pending)  # (every other event of this instant has run: see LATE)
        callback = self._pending.pop(prio)
        callback()
        if self._pending:
            self._defer()
        else:
            self._running = False


class _Late(simpy.Event):
    """An event that has happened, taken after every URGENT or NORMAL event of this instant (`LATE`);
    written as SimPy writes its Timeout."""

    def __init__(self, env: simpy.Environment, callback: Callable[[simpy.Event], None]):
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._ok = True
        env.schedule(self, LATE)  # type: ignore[arg-type]
