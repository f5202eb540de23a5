"""The fault matrix: a test parametrised over generations x backup phases x fault kinds.

A case injects its fault while the first VM of the job is in the named phase: the scenario is run
once without the fault (a probe, cached per scenario and generation), the first span of that phase
is found in its trace (report/spans.py names: freeze, checkpoint, snapshot, auto_recovery, copy,
merge), and the fault is scheduled at the middle of that span. Runs are deterministic for a seed, so
the faulted run is the probe up to that instant.

Fault kinds:
- `crash_backup_node`: the node doing that VM's phase crashes (and comes back `recover_after_s`
  later);
- `crash_csv_owner`: the coordinator of that VM's CSV at that instant crashes (and comes back);
- `snapshot_fault`: the array refuses the next snapshot of that VM's CSV (VSS_E_PROVIDER_VETO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster_sim.scenario import GENERATIONS, Scenario, initial_coordinator

if TYPE_CHECKING:
    from cluster_sim.results import GenerationResult

PHASES = ("freeze", "snapshot", "copy")  # the phases every generation has
FAULT_KINDS = ("crash_backup_node", "crash_csv_owner", "snapshot_fault")
RECOVER_AFTER_S = 1800.0  # [P] a crashed node is back 30 min later (the run can finish)

_PROBES: dict[tuple[str, str], GenerationResult] = {}


@dataclass(frozen=True)
class FaultCase:
    generation: str
    phase: str
    fault: str
    recover_after_s: float = RECOVER_AFTER_S

    @property
    def id(self) -> str:
        return f"{self.generation}-{self.phase}-{self.fault}"

    def where(self, sc: Scenario) -> tuple[float, str, str, str, str] | None:
        """(instant, VM, node doing the phase, the VM's CSV, its owner then) of the first span of the phase in the
        fault-free run of this generation; None if the generation never enters it."""
        from cluster_sim.simulation import run

        key = (sc.model_dump_json(), self.generation)
        if key not in _PROBES:
            probe = sc.model_copy(update={"backup": sc.backup.model_copy(update={"generations": [self.generation]})})  # type: ignore[union-attr]
            _PROBES[key] = run(probe, backend="local", workers=1).generations[0]
        g = _PROBES[key]
        spans = [s for s in g.trace.spans if s[0] == self.phase]
        if not spans:
            return None
        _phase, vm, node, start, end, _attempt, _note = min(spans, key=lambda s: (s[3], s[1]))
        at = (start + end) / 2
        csv = next(r.csv for r in g.vms if r.vm == vm)
        owner = initial_coordinator(int(csv.split("-")[-1]) - 1, sc.cluster.nodes)
        for t, event, ids in g.trace.events:
            if t > at:
                break
            if event == "csv_owner_moved" and ids.get("csv") == csv:
                owner = ids["node"]
        return at, vm, node, csv, owner

    def inject(self, sc: Scenario) -> Scenario:
        """The scenario running only this generation, with the fault in its phase. Skips the test
        (pytest.skip) if the generation never enters the phase."""
        from cluster_sim.scenario import scenario_from_dict

        found = self.where(sc)
        if found is None:
            import pytest

            pytest.skip(f"{self.generation} never enters phase {self.phase!r} in {sc.name}")
        at, vm, node, csv, owner = found
        data = sc.model_dump(mode="json")
        data["backup"]["generations"] = [self.generation]
        events: list[dict[str, Any]] = list(data.get("events") or [])
        if self.fault in ("crash_backup_node", "crash_csv_owner"):
            victim = node if self.fault == "crash_backup_node" else owner
            events += [{"at_s": at, "kind": "crash_node", "node": victim},
                       {"at_s": at + self.recover_after_s, "kind": "recover_node", "node": victim}]
        elif self.fault == "snapshot_fault":
            events.append({"at_s": at, "kind": "snapshot_fault", "csv": csv, "code": "provider_veto"})
        else:
            raise ValueError(f"unknown fault kind {self.fault!r} (choose from {', '.join(FAULT_KINDS)})")
        data["events"] = sorted(events, key=lambda e: e["at_s"])
        return scenario_from_dict(data, f"{sc.name} with {self.id}")


def fault_cases(generations: list[str] | tuple[str, ...] = GENERATIONS, phases: tuple[str, ...] | list[str] = PHASES,
                faults: tuple[str, ...] | list[str] = FAULT_KINDS) -> list[FaultCase]:
    """Every (generation, phase, fault kind) combination, in that order."""
    bad = [f for f in faults if f not in FAULT_KINDS]
    if bad:
        raise ValueError(f"unknown fault kinds {bad} (choose from {', '.join(FAULT_KINDS)})")
    bad = [g for g in generations if g not in GENERATIONS]
    if bad:
        raise ValueError(f"unknown generations {bad} (choose from {', '.join(GENERATIONS)})")
    return [FaultCase(g, p, f) for g in generations for p in phases for f in faults]


def fault_matrix(generations: list[str] | tuple[str, ...] = GENERATIONS, phases: tuple[str, ...] | list[str] = PHASES,
                 faults: tuple[str, ...] | list[str] = FAULT_KINDS, argname: str = "fault_case") -> Any:
    """A pytest decorator: the test runs once per case, given as `fault_case` (pass it to
    `cluster_sim_run(..., fault=fault_case)`)."""
    import pytest

    cases = fault_cases(generations, phases, faults)
    return pytest.mark.parametrize(argname, cases, ids=[c.id for c in cases])
