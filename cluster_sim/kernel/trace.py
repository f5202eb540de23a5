"""The event trace: structlog events stamped with simulated time, written as JSON lines.

Events are recorded cheaply during the run (a tuple each) and rendered through a structlog
processor chain when written, so tracing an 800-VM run costs little simulated-run wall time.

Beside the events, the trace keeps spans: what a component was doing from when to when (a VM's
backup phases, its attempts), opened and closed by the component itself (`span`, `open_span`,
`close_span`) and written as `spans.jsonl`. Spans are not events (`len(trace)` counts events).
"""

from __future__ import annotations

import json
import pickle
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _nan_to_null(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: write a missing number as null (json.dumps never asks `default` about floats)."""
    for k, v in event_dict.items():
        if isinstance(v, float) and v != v:
            event_dict[k] = None
    return event_dict


def _json(obj: Any) -> Any:
    raise TypeError(f"not serialisable: {type(obj).__name__}")


def _encoder(default: Callable[[Any], Any], allow_nan: bool = True) -> Callable[[Any], str]:
    """`json.JSONEncoder(default=default, allow_nan=allow_nan).encode`, its C encoder made once:
    encode() makes a new one at every call, a third of writing an 8,000-VM run's trace (120,000
    lines). The same text: the same C function with the same settings (JSONEncoder's defaults).
    allow_nan=False: a NaN or an infinity anywhere raises ValueError (as json.dumps's does)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # (a Python without the C accelerator)
        return json.JSONEncoder(default=default, allow_nan=allow_nan).encode
    markers: dict[int, Any] = {}  # (circular check: emptied again by every encoding that succeeds)
    one = make(markers, default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, allow_nan)

    def encode(obj: Any) -> str:
        try:
            return "".join(one(obj, 0))
        except BaseException:
            markers.clear()  # (what an encoding left there when it stopped half-way)
            raise

    return encode


_PLAIN = frozenset((str, int, float, bool, type(None)))  # types a JSON line reads back as themselves


def _as_read(row: dict[str, Any], encode: Callable[[Any], str]) -> dict[str, Any]:
    """The row as its JSON line reads back: a NaN at the top is null (`_nan_to_null`); a value of
    another type than str, int, float, bool or None (a tuple, a dict, an enum) goes through JSON
    (a tuple comes back a list); the rest are what they were (a float's shortest repr reads back
    as the same float)."""
    for k, v in row.items():
        if type(v) not in _PLAIN:
            row[k] = json.loads(encode(v))
        elif v != v:
            row[k] = None
    return row


class Trace:
    def __init__(self, clock: Any):
        # anything with .now (a simpy Environment), held weakly: a finished run's trace must not
        # keep its whole simulation alive (every object of a generation, hundreds of MiB at
        # 8,000 VMs, for as long as its result is kept)
        try:
            self._clock: Any = weakref.ref(clock)
        except TypeError:
            self._clock = lambda: clock
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        # (phase, vm, node, start_s, end_s, attempt, note), in the order they closed
        self.spans: list[tuple[str, str, str, float, float, int, str]] = []
        self._open: dict[Hashable, tuple[str, str, str, float, int]] = {}

    def _now(self) -> float | None:
        clock = self._clock() if self._clock is not None else None
        return None if clock is None else float(clock.now)

    # -- spans -------------------------------------------------------------------------------------
    def open_span(self, key: Hashable, phase: str, vm: str, node: str, attempt: int) -> None:
        """Start a span (closed by `close_span(key)`); a span already open under `key` is closed first."""
        now = self._now()
        if now is None:
            return
        if key in self._open:
            self.close_span(key)
        self._open[key] = (phase, vm, node, now, attempt)

    def close_span(self, key: Hashable, note: str = "") -> None:
        now = self._now()
        opened = self._open.pop(key, None)
        if now is None or opened is None:
            return
        phase, vm, node, start, attempt = opened
        self.spans.append((phase, vm, node, start, now, attempt, note))

    def is_open(self, key: Hashable) -> bool:
        return key in self._open

    @contextmanager
    def span(self, phase: str, vm: str, node: str, attempt: int) -> Iterator[None]:
        """The block (a SimPy step, across its yields) is a span of `phase` for the VM; it ends when
        the block ends, however (a failure, an interrupt)."""
        key = object()
        self.open_span(key, phase, vm, node, attempt)
        try:
            yield
        finally:
            self.close_span(key)

    def close_open_spans(self, note: str = "unfinished") -> None:
        """At the end of the run: what is still open ends now."""
        for key in list(self._open):
            self.close_span(key, note)

    def _span_dicts(self) -> Iterator[dict[str, Any]]:
        """Each span as the dict its line of spans.jsonl is written from (a note only where there is one)."""
        for phase, vm, node, start, end, attempt, note in self.spans:
            row = {"phase": phase, "vm": vm, "node": node, "start_s": round(start, 6), "end_s": round(end, 6),
                   "attempt": attempt}
            if note:
                row["note"] = note
            yield row

    def write_spans_jsonl(self, path: str | Path) -> None:
        encode = _encoder(json.JSONEncoder().default)  # (json.dumps's text)
        with open(path, "w", encoding="utf-8") as fh:
            for row in self._span_dicts():
                fh.write(encode(row) + "\n")

    def __call__(self, event: str, **ids: Any) -> None:
        clock = self._clock() if self._clock is not None else None
        if clock is None:
            # the simulation is gone: what runs now is a suspended SimPy process's clean-up being
            # collected after the run (nothing that happens then belongs to the run's trace)
            return
        self.events.append((float(clock.now), event, ids))

    def __len__(self) -> int:
        return len(self.events)

    def __getstate__(self) -> dict[str, Any]:
        # a finished trace travels between processes without its clock (a whole simulation), its
        # events and spans pickled as one blob that is unpickled where they are first read
        # (`__getattr__`), not where the result arrives: a process waiting for four generations of
        # 8,000 VMs spent 0.6 s on each trace, beside the workers still running, for a trace that
        # may never be read (the run command writes it where it ran)
        return {"_packed": pickle.dumps((self.events, self.spans), protocol=pickle.HIGHEST_PROTOCOL),
                "_open": {}, "_clock": None}

    def __getattr__(self, name: str) -> Any:
        # (only for attributes not found: a trace that came packed unpacks its events and spans)
        if name in ("events", "spans"):
            packed = self.__dict__.pop("_packed", None)
            if packed is not None:
                self.events, self.spans = pickle.loads(packed)
                return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def lines(self) -> Iterator[str]:
        """Each event as one JSON line: the event dict structlog's bound logger would build
        (`sim_time_s`, the ids, `event`) run through the processor chain directly (the logger's own
        call, with its context copy and method lookup, was two thirds of the writing time).

        An event without a NaN or an infinity in it is the chain's text without the chain: the
        chain is `_nan_to_null`, which changes only NaNs, then the JSON renderer, which is `encode`;
        `strict` is `encode` refusing NaN and infinity, so what it writes is what the chain writes.
        An event it refuses goes through the chain (structlog imported then: a twentieth of a second
        in each process writing a trace). Writing the 15,840 lines of an 800-VM generation: 0.100 s
        through the chain, 0.074 s so (and no structlog import)."""
        encode = _encoder(_json)  # one encoder, not one per line (json.dumps(default=))
        strict = _encoder(_json, allow_nan=False)
        chain = None
        for line in self._event_dicts():
            try:
                yield strict(line)
                continue
            except ValueError:  # a NaN or an infinity (a value `_json` refuses raises TypeError)
                pass
            if chain is None:
                import structlog  # (it imports asyncio: a tenth of a second at start-up)

                chain = (_nan_to_null, structlog.processors.JSONRenderer(serializer=lambda obj, **_: encode(obj)))
            for proc in chain:
                line = proc(None, "info", line)
            yield line

    def _event_dicts(self) -> Iterator[Any]:
        """Each event as the dict structlog's bound logger would build: `sim_time_s`, the ids, `event`."""
        for t, event, ids in self.events:
            yield {"sim_time_s": round(t, 6), **ids, "event": event}

    def rows(self) -> Iterator[dict[str, Any]]:
        """Each event as the dict its line of `lines` reads back as (json.loads): what the report
        draws from, without writing and parsing the lines again (`_as_read`)."""
        encode = _encoder(_json)
        return (_as_read(row, encode) for row in self._event_dicts())

    def span_rows(self) -> Iterator[dict[str, Any]]:
        """Each span as the dict its line of spans.jsonl reads back as."""
        encode = _encoder(_json)
        return (_as_read(row, encode) for row in self._span_dicts())

    def write_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            for line in self.lines():
                fh.write(line + "\n")

    def monotonic(self) -> bool:
        return all(self.events[i][0] <= self.events[i + 1][0] for i in range(len(self.events) - 1))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
