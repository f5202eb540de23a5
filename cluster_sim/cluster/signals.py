"""Signals: what the cluster tells the components that subscribe to it (the backup, the data
plane, the fault ledger). A subscriber connects a handler and keeps the function `connect`
returns to disconnect it; handlers run in the order they connected. A veto signal asks every
handler and combines the answers (`ask`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Signal:
    def __init__(self, name: str, doc: str = ""):
        self.name = name
        self.__doc__ = doc
        self._handlers: list[Callable[..., Any]] = []

    def connect(self, fn: Callable[..., Any]) -> Callable[[], None]:
        """Call `fn` on every emission from now on; returns the function that disconnects it."""
        self._handlers.append(fn)
        return lambda: self.disconnect(fn)

    def disconnect(self, fn: Callable[..., Any]) -> None:
        if fn in self._handlers:
            self._handlers.remove(fn)

    def emit(self, *args: Any) -> None:
        for fn in list(self._handlers):
            fn(*args)

    def ask(self, *args: Any) -> str:
        """A veto: every handler answers "ok", "abort" or "refuse"; the strongest answer wins
        ("refuse" over "abort" over "ok"; "ok" with no handler)."""
        verdict = "ok"
        for fn in list(self._handlers):
            answer = fn(*args)
            if answer == "refuse" or (answer == "abort" and verdict == "ok"):
                verdict = answer
        return verdict

    def __bool__(self) -> bool:
        return bool(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)
