"""Cluster Shared Volumes: coordinator node, redirected-access holds, backup pinning.

While a CSV has any redirected-access hold, every node other than the coordinator reaches it
over SMB on the cluster network through the coordinator [MS]. Kinds of hold:
- `backup_pin` (ws2008r2): the CSV is pinned to the backup node, which becomes coordinator,
  from preparation until that VM's backup ends. Pins from one node share the CSV; a pin from
  another node waits until they are all released (backups of other VMs on that CSV from other
  nodes are "badly hurt" [MS]).
- `metadata` (ws2012+): the snapshot creation, a metadata operation, is briefly redirected [MS].
- `backup_in_progress`: left behind when a ws2008r2 backup dies; clears after 30 min [MS].
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import simpy


@dataclass
class Hold:
    hid: int
    csv: str
    kind: str
    node: str
    taken_s: float
    released_s: float | None = None


class CsvVolume:
    def __init__(self, name: str, coordinator: str, env: simpy.Environment, table: CsvTable):
        self.name = name
        self.coordinator = coordinator
        self.env = env
        self.table = table
        self.holds: dict[int, Hold] = {}
        self.redirected_s = 0.0
        self._redirected_since: float | None = None
        self._pin_waiters: deque[tuple[str, simpy.Event]] = deque()
        self.ownership_moves = 0

    @property
    def redirected(self) -> bool:
        return bool(self.holds)

    def pinned_by(self) -> str | None:
        for h in self.holds.values():
            if h.kind == "backup_pin":
                return h.node
        return None

    # -- holds ---------------------------------------------------------------------------------
    def hold(self, kind: str, node: str) -> Hold:
        was = self.redirected
        h = self.table.new_hold(self.name, kind, node)
        self.holds[h.hid] = h
        self.table.trace("csv_redirect_hold", csv=self.name, node=node, kind=kind, hold=h.hid)
        if not was:
            self._redirected_since = self.env.now
            self.table.changed(self.name)
        return h

    def release(self, h: Hold) -> None:
        if h.released_s is not None:
            return
        h.released_s = self.env.now
        self.holds.pop(h.hid, None)
        self.table.trace("csv_redirect_release", csv=self.name, node=h.node, kind=h.kind, hold=h.hid)
        if not self.holds:
            if self._redirected_since is not None:
                self.redirected_s += self.env.now - self._redirected_since
                self._redirected_since = None
            self.table.changed(self.name)
        if h.kind == "backup_pin":
            self._wake_pin_waiters()

    def move_coordinator(self, node: str) -> None:
        if node != self.coordinator:
            self.table.trace("csv_owner_moved", csv=self.name, node=node, previous=self.coordinator)
            previous, self.coordinator = self.coordinator, node
            self.ownership_moves += 1
            self.table.changed(self.name)
            if self.table.on_owner_moved is not None:
                self.table.on_owner_moved(self.name, previous, node)

    # -- ws2008r2 pinning ----------------------------------------------------------------------
    def pin(self, node: str) -> simpy.Event:
        """Event firing with a `backup_pin` hold once no other node pins this CSV."""
        ev = self.env.event()
        owner = self.pinned_by()
        if (owner is None or owner == node) and not self._pin_waiters:
            self._grant(node, ev)
        else:
            self._pin_waiters.append((node, ev))
        return ev

    def pin_requests(self) -> list[simpy.Event]:
        """The pins still waiting for this CSV (events not yet granted)."""
        return [e for _n, e in self._pin_waiters]

    def cancel_pin(self, ev: simpy.Event) -> None:
        self._pin_waiters = deque((n, e) for n, e in self._pin_waiters if e is not ev)

    def _grant(self, node: str, ev: simpy.Event) -> None:
        # a pin queued by a node that has failed since does not move the CSV to it: a failed node
        # cannot coordinate (its backup finds its node gone and releases the pin)
        if self.table.can_coordinate is None or self.table.can_coordinate(node):
            self.move_coordinator(node)
        ev.succeed(self.hold("backup_pin", node))

    def _wake_pin_waiters(self) -> None:
        while self._pin_waiters:
            owner = self.pinned_by()
            node, ev = self._pin_waiters[0]
            if owner is not None and owner != node:
                return
            self._pin_waiters.popleft()
            self._grant(node, ev)

    def finish(self) -> None:
        if self._redirected_since is not None:
            self.redirected_s += self.env.now - self._redirected_since
            self._redirected_since = self.env.now


class CsvTable:
    def __init__(self, env: simpy.Environment, coordinators: dict[str, str], trace: Callable[..., None]):
        self.env = env
        self.trace = trace
        self._hid = 0
        self.all_holds: list[Hold] = []
        self.listeners: list[Callable[[str], None]] = []
        self.can_coordinate: Callable[[str], bool] | None = None  # set by the cluster: is the node up?
        self.on_owner_moved: Callable[[str, str, str], None] | None = None  # (csv, previous, owner)
        self.volumes = {name: CsvVolume(name, node, env, self) for name, node in coordinators.items()}

    def __getitem__(self, name: str) -> CsvVolume:
        return self.volumes[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.volumes.values())

    def new_hold(self, csv: str, kind: str, node: str) -> Hold:
        self._hid += 1
        h = Hold(self._hid, csv, kind, node, self.env.now)
        self.all_holds.append(h)
        return h

    def changed(self, csv: str) -> None:
        for fn in self.listeners:
            fn(csv)

    def leaked_holds(self) -> list[Hold]:
        return [h for h in self.all_holds if h.released_s is None]

    def finish(self) -> None:
        for v in self.volumes.values():
            v.finish()
