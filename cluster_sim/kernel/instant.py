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
from heapq import heappop

import simpy
from simpy.core import BoundClass, EmptySchedule, StopSimulation
from simpy.events import EventPriority

FLUID = 20  # one fluid recomputation for everything that changed this instant
LATE = 2  # the deferrer's SimPy priority: after URGENT (0) and NORMAL (1) events of the same instant


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes (for benchmarks)."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        # SimPy binds `timeout`, `event`, `process`... to the instance (BoundClass.bind_early), but
        # only those in the instance's own class's __dict__: for a subclass, none, and each
        # env.timeout(...) went through the descriptor, a new bound method a call (1,000,000 bare
        # steps: 0.87 s against 0.73). Bound here as SimPy binds them for its own class.
        for name, obj in simpy.Environment.__dict__.items():
            if type(obj) is BoundClass:
                setattr(self, name, getattr(self, name))
        self.steps = 0

    def step(self) -> None:
        """SimPy's `Environment.step` (simpy 4.1, simpy/core.py) with the count, written out: calling
        the parent's step from here cost 0.13 us an event, a sixth of a bare SimPy step (1,000,000
        steps with the early binding above: 0.88 s against 0.74). A call that finds no event
        counts, as it did."""
        self.steps += 1
        try:
            self._now, _, _, event = heappop(self._queue)
        except IndexError:
            raise EmptySchedule from None
        callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
        try:
            for callback in callbacks:
                callback(event)
        except StopSimulation:
            event.callbacks = callbacks[callbacks.index(callback) + 1:]
            self.schedule(event, EventPriority(-1))
            raise
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc


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
