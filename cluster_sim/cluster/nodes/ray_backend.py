"""The Ray node backend: one actor per cluster node, with a replay log per node so that an actor
lost to the machinery (not to the scenario) is rebuilt with the same state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cluster_sim.cluster.nodes.node import Node, NodeDown, Ops


class BackendFailure(RuntimeError):
    """The node backend itself failed (not a fault of the scenario): a node actor that could not
    be rebuilt, or Ray that stopped answering. The run has no trustworthy result."""


# [P] How many times one node's actor is rebuilt from its log in one generation before the run is
# given up (an actor that keeps dying points at the machine, not at chance).
MAX_REBUILDS_PER_NODE = 3


@dataclass(eq=False)  # compared and hashed by identity
class _Sent:
    """A batch sent to a node actor: the node, its place in the node's log, the answer's ref."""

    node: str
    seq: int
    ref: Any


class RayBackend:
    """Nodes as Ray actors, one per cluster node, created once per run and reset per generation.

    An actor runs the calls of one caller in the order they were sent, so sending without
    waiting keeps every node's state exactly as the local backend has it.

    Faults of the machinery are not faults of the scenario. The backend keeps, per node, every
    batch sent to its current actor since the actor was created or the generation started (a
    generation begins with `reset`, so older batches do not matter). An actor that dies without
    the scenario asking (an OOM kill, a lost worker) or that does not answer within
    `call_timeout_s` (a hung or stopped process) is killed and replaced by a fresh actor that
    replays the log: it reaches the same state and gives the same answers, so results stay
    identical to the local backend. If that fails `MAX_REBUILDS_PER_NODE` times, `BackendFailure`
    ends the run. Only the scenario's crashes (`kill`) and the test hook `kill_behind_our_back`
    make a node stop answering (`NodeDown`)."""

    name = "ray"

    def __init__(self, names: list[str], call_timeout_s: float = 60.0, start_timeout_s: float = 300.0):
        import ray

        self._ray = ray
        self._remote = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(Node)
        self.names = list(names)
        self.call_timeout_s = call_timeout_s  # deadline of an answer from a running actor
        self.start_timeout_s = start_timeout_s  # deadline of the first answer of a new actor
        self.actors: dict[str, Any] = {}
        self.log: dict[str, list[Ops]] = {}  # batches sent to the current actor (see the class doc)
        self.fresh: set[str] = set()  # actors that have not answered yet (still starting)
        self.dead_on_purpose: set[str] = set()  # killed by kill_behind_our_back: NodeDown, not rebuilt
        self.rebuilds: dict[str, int] = {}
        self.notes: list[str] = []  # what the backend did about faults of its own (rebuilds)
        for n in names:
            self.restart(n)
        self._wait_started(list(self.names))

    # -- sending and collecting ------------------------------------------------------------------
    def send(self, node: str, ops: Ops) -> Any:
        actor = self.actors.get(node)
        if actor is None:
            return NodeDown(node)
        log = self.log[node]
        log.append(ops)
        return _Sent(node, len(log) - 1, actor.apply.remote(ops))

    def collect(self, payloads: list[Any]) -> list[list[Any] | NodeDown]:
        sent = [p for p in payloads if isinstance(p, _Sent)]
        got = self._answers(sent)
        return [p if isinstance(p, NodeDown) else got[id(p)] for p in payloads]

    def _answers(self, sent: list[_Sent]) -> dict[int, list[Any] | NodeDown]:
        """The answer of every batch (by id of its `_Sent`). A node whose actor died or hung is
        rebuilt and its unanswered batches sent again, until every batch has an answer."""
        values, lost = self._wait(sent)
        got: dict[int, list[Any] | NodeDown] = dict(values)
        for node in sorted({s.node for s in lost}):
            mine = sorted((s for s in lost if s.node == node), key=lambda s: s.seq)
            if node in self.dead_on_purpose or self.actors.get(node) is None:
                got.update((id(s), NodeDown(node)) for s in mine)
                continue
            again = self._rebuild(node, [s.seq for s in mine], lost[mine[0]])
            answers = self._answers(again)
            for old, new in zip(mine, again, strict=True):
                got[id(old)] = answers[id(new)]
        return got

    def _wait(self, sent: list[_Sent]) -> tuple[dict[int, list[Any]], dict[_Sent, str]]:
        """Answers that came in time, and the batches without one (with why: died or timed out)."""
        ray = self._ray
        import time

        values: dict[int, list[Any]] = {}
        lost: dict[_Sent, str] = {}
        pending = {s.ref: s for s in sent}
        t0 = time.monotonic()
        while pending:
            deadlines = {ref: t0 + (self.start_timeout_s if s.node in self.fresh else self.call_timeout_s)
                         for ref, s in pending.items()}
            left = min(deadlines.values()) - time.monotonic()
            ready: list[Any] = []
            if left > 0:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=left)
            if not ready:  # the earliest deadline passed: every batch past its own is hung
                now = time.monotonic()
                for ref in [r for r, d in deadlines.items() if d <= now]:
                    s = pending.pop(ref)
                    lost[s] = f"no answer within {now - t0:.0f} s"
                continue
            done = [pending.pop(ref) for ref in ready]
            try:  # every answer at once (the usual case: nobody died)
                answers = ray.get([s.ref for s in done], timeout=self.call_timeout_s)
            except ray.exceptions.RayTaskError:
                raise  # the node code itself raised: a bug, as on the local backend
            except ray.exceptions.RayError:
                answers = None
            for k, s in enumerate(done):
                try:
                    values[id(s)] = answers[k] if answers is not None else ray.get(s.ref, timeout=self.call_timeout_s)
                    self.fresh.discard(s.node)
                except ray.exceptions.RayTaskError:
                    raise
                except ray.exceptions.RayError as exc:
                    lost[s] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
        return values, lost

    def _rebuild(self, node: str, unanswered: list[int], why: str) -> list[_Sent]:
        """Replace the node's actor by a fresh one that replays its log; send the unanswered
        batches again. Returns the new sends, in the order of `unanswered`."""
        n = self.rebuilds[node] = self.rebuilds.get(node, 0) + 1
        if n > MAX_REBUILDS_PER_NODE:
            raise BackendFailure(
                f"the Ray actor of {node} failed {n} times in this generation ({why}); the run is stopped "
                f"because its results could not be trusted (a node crash is simulated only when the scenario "
                f"asks for one). Check the machine's memory and the Ray logs, or use --backend local")
        log = self.log[node]
        old = self.actors[node]
        try:
            self._ray.kill(old, no_restart=True)  # a hung actor must not come back and answer
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        self.actors[node] = actor = self._remote.remote(node)
        self.fresh.add(node)
        first = unanswered[0]
        if unanswered != list(range(first, len(log))):  # an actor answers in order: never happens
            raise BackendFailure(f"{node}: batches {unanswered} unanswered out of order; cannot replay")
        answered = [op for batch in log[:first] for op in batch]
        if answered:
            actor.apply.remote(answered)  # its answers were read before: only the state matters
        self.notes.append(f"{node}: Ray actor lost ({why}); rebuilt from its log ({len(answered)} operations "
                          f"replayed, {len(unanswered)} batches sent again)")
        return [_Sent(node, seq, actor.apply.remote(log[seq])) for seq in unanswered]

    # -- life cycle ---------------------------------------------------------------------------------
    def _wait_started(self, nodes: list[str]) -> None:
        """Wait until these (new, empty) actors answer; one that dies or does not answer in time is
        replaced (it held nothing yet), up to MAX_REBUILDS_PER_NODE times."""
        tries = dict.fromkeys(nodes, 0)
        while nodes:
            sent = [self.send(n, []) for n in nodes]
            for n in nodes:
                self.log[n].clear()
            _values, lost = self._wait([s for s in sent if isinstance(s, _Sent)])
            nodes = []
            for s, why in sorted(lost.items(), key=lambda kv: kv[0].node):
                tries[s.node] += 1
                if tries[s.node] > MAX_REBUILDS_PER_NODE:
                    raise BackendFailure(
                        f"the Ray actor of {s.node} could not be started ({tries[s.node]} tries; last: {why}; "
                        f"a first answer may take run.ray_start_timeout_s = {self.start_timeout_s:g} s)")
                self.notes.append(f"{s.node}: new Ray actor lost before its first answer ({why}); replaced")
                try:
                    self._ray.kill(self.actors[s.node], no_restart=True)
                except Exception:  # noqa: BLE001 - it may be gone already
                    pass
                self.restart(s.node)
                nodes.append(s.node)

    def kill(self, node: str) -> None:
        """The scenario crashes the node: its actor goes, nothing replaces it until `restart`."""
        actor = self.actors.get(node)
        if actor is not None:
            self._ray.kill(actor, no_restart=True)
            self._wait_dead(actor)
        self.actors[node] = None
        self.log[node] = []

    def kill_behind_our_back(self, node: str) -> None:
        """Kill the actor without telling anyone (tests: an actor dying on its own, which the
        cluster must find by polling; it is not rebuilt)."""
        actor = self.actors.get(node)
        if actor is not None:
            self.dead_on_purpose.add(node)
            self._ray.kill(actor, no_restart=True)
            self._wait_dead(actor)

    def _wait_dead(self, actor: Any) -> None:
        # ray.kill is asynchronous; wait until the actor refuses calls so that the death falls
        # at the same point of the simulation on every run.
        import time

        ray = self._ray
        give_up = time.monotonic() + self.call_timeout_s
        while time.monotonic() < give_up:
            try:
                ray.get(actor.apply.remote([]), timeout=max(0.1, min(10.0, give_up - time.monotonic())))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                return
            time.sleep(0.05)
        raise BackendFailure(f"a killed Ray actor kept answering for {self.call_timeout_s:g} s")

    def restart(self, node: str) -> None:
        self.actors[node] = self._remote.remote(node)
        self.log[node] = []
        self.fresh.add(node)
        self.dead_on_purpose.discard(node)

    def revive_all(self) -> None:
        """Before a generation: every node gets a live actor with an empty log. Actors the last
        generation killed (or killed behind its back) are replaced; the others are asked to answer,
        and one that does not (it died between generations) is replaced too."""
        self.rebuilds.clear()
        for node in self.names:
            if self.actors.get(node) is None or node in self.dead_on_purpose:
                old = self.actors.get(node)
                if old is not None:
                    self._ray.kill(old, no_restart=True)
                self.restart(node)
        sent = [self.send(n, []) for n in self.names]
        _values, lost = self._wait([s for s in sent if isinstance(s, _Sent)])
        for s, why in sorted(lost.items(), key=lambda kv: kv[0].node):
            self.notes.append(f"{s.node}: Ray actor lost between generations ({why}); replaced")
            try:
                self._ray.kill(self.actors[s.node], no_restart=True)
            except Exception:  # noqa: BLE001
                pass
            self.restart(s.node)
        if lost:
            self._wait_started(sorted(s.node for s in lost))
        for n in self.names:
            self.log[n] = []

    def close(self) -> None:
        for node in list(self.actors):
            actor = self.actors[node]
            if actor is not None:
                self._ray.kill(actor, no_restart=True)
        self.actors.clear()

