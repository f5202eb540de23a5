"""Live migration: the pre-copy model (a pure function) and the migration process.

Pre-copy (Clark et al. 2005; analysed by Liu et al., "Performance and energy modeling for live
migration of virtual machines", HPDC 2011): round 0 sends all memory; each later round resends
the pages dirtied while the previous round was on the wire; when what remains could be sent
within the allowed blackout, or a cap is hit, the VM is paused, the rest is sent
(stop-and-copy) and the VM resumes on the destination.

Closed form (Liu et al. 2011, eqs. 1-4), when no cap binds: with memory V, rate R, dirty rate D
and ratio lam = D / R < 1, round i sends V * lam**i and lasts V * lam**i / R. After n live rounds
(rounds 0 .. n-1) the remainder is V * lam**n, so
    n         = ceil( log(R * T_max / V) / log(lam) )   (at least 1)
    sent      = V * (1 - lam**(n + 1)) / (1 - lam)
    duration  = sent / R                 (+ resume time)
    downtime  = V * lam**n / R           (+ resume time)
Dirtying is capped by the working set: a round never leaves more than working_set_fraction * V
to resend (as SimGrid's model). With lam >= 1 pre-copy does not converge; it stops at
`max_rounds` or once the total sent has passed `max_total_factor * V` (checked after each round,
as Xen's pre-copy does), and the blackout is long.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PrecopyResult:
    rounds: int  # live rounds before stop-and-copy
    sent_mib: float
    duration_s: float  # from the start to the resume on the destination
    downtime_s: float  # stop-and-copy blackout (+ resume)
    converged: bool
    stop_reason: str  # threshold | max_rounds | max_total


def precopy(
    memory_mib: float,
    rate_mib_s: float,
    dirty_mib_s: float,
    max_downtime_s: float = 0.3,
    max_rounds: int = 30,
    max_total_factor: float = 3.0,
    working_set_fraction: float = 0.9,
    resume_s: float = 0.0,
) -> PrecopyResult:
    if memory_mib <= 0 or rate_mib_s <= 0:
        raise ValueError("memory and rate must be positive")
    if dirty_mib_s < 0 or max_downtime_s < 0 or max_rounds < 1 or max_total_factor < 1:
        raise ValueError("invalid pre-copy parameters")
    if not 0 < working_set_fraction <= 1 or resume_s < 0:
        raise ValueError("working_set_fraction must be in (0, 1] and resume_s >= 0")
    cap = working_set_fraction * memory_mib
    to_send = memory_mib
    sent = duration = 0.0
    rounds = 0
    while True:
        t = to_send / rate_mib_s
        sent += to_send
        duration += t
        rounds += 1
        remaining = min(dirty_mib_s * t, cap)
        if remaining / rate_mib_s <= max_downtime_s:
            reason, converged = "threshold", True
            break
        if rounds >= max_rounds:
            reason, converged = "max_rounds", False
            break
        if sent > max_total_factor * memory_mib:  # checked after the round, as Xen does
            reason, converged = "max_total", False
            break
        to_send = remaining
    downtime = remaining / rate_mib_s + resume_s
    return PrecopyResult(rounds, sent + remaining, duration + downtime, downtime, converged, reason)


# ----------------------------------------------------------------------------------------------
# the migration process in the simulator
# ----------------------------------------------------------------------------------------------
@dataclass
class MigrationStats:
    """Counters of live-migration requests. They add up (the auditor checks it):
    requested = completed + failed + in_flight, and refused = retried + failed_by["refused_too_long"]
    + (requests waiting after a refusal, at most in_flight); aborted <= requested."""

    requested: int = 0
    completed: int = 0
    refused: int = 0  # times a request was refused (VM in its snapshot critical section, saved for
    # its backup, or still booting after a failover)
    retried: int = 0  # times a refused request was asked again
    aborted: int = 0  # migrations that aborted a VM's backup attempt (each counted once)
    failed: int = 0  # could not complete (node down, VM gone, no target, waited too long, interrupted)
    downtime_s: list[float] | None = None
    delay_s_total: float = 0.0  # delay caused by refusals
    in_flight: int = 0  # requests not yet completed or failed (non-zero only when a run is cut short)
    failed_by: Counter[str] = field(default_factory=Counter)  # failed, per reason

    def __post_init__(self) -> None:
        if self.downtime_s is None:
            self.downtime_s = []


class Migrations:
    """Live migrations as SimPy processes whose pre-copy rounds are flows on the
    live-migration network (max-min shared with whatever else uses those links)."""

    def __init__(self, cm):  # type: ignore[no-untyped-def]
        import simpy

        self.cm = cm
        self.cfg = cm.sc.cluster.migration
        self.stats = MigrationStats()
        self.requested: set[str] = set()  # asked for, possibly waiting for a refusal to lift
        self.migrating: set[str] = set()  # actually moving (pre-copy under way)
        self.heading: dict[str, str] = {}  # requested migrations with a chosen destination
        self.slots = {n: simpy.Resource(cm.env, capacity=self.cfg.max_concurrent_per_node) for n in cm.nodes}
        # set by a backup job: vm -> "ok" | "refuse" | "abort"

    def request(self, vm: str, dst: str | None, why: str):  # type: ignore[no-untyped-def]
        """Start a migration process; returns it (its value: True if the VM moved)."""
        self.stats.requested += 1
        if vm in self.requested:
            self._fail(vm, "already_requested")
            ev = self.cm.env.event()
            ev.succeed(False)
            return ev
        self.requested.add(vm)
        if dst is not None:
            self.heading[vm] = dst
        self.stats.in_flight += 1
        return self.cm.env.process(self._run(vm, dst, why))

    def _fail(self, vm: str, reason: str) -> bool:
        self.stats.failed += 1
        self.stats.failed_by[reason] += 1
        self.cm.trace("migration_failed", vm=vm, reason=reason)
        return False

    def _destination(self, vm: str, dst: str | None) -> tuple[str | None, str]:
        """Where the VM would go now: (node, "") or (None, why it cannot move)."""
        cm = self.cm
        src = cm.host[vm]
        if vm in cm.unplaced:  # its host failed and no node could take it yet
            return None, "node_down"
        if dst is None:
            dst = cm.least_loaded(exclude={src}, vm=vm)
        if dst is None or dst == src:
            return None, "no_target"
        if not cm.versions.can_host(vm, dst):  # configuration above 5.0 to a 2012 R2 node [MS]
            return None, "config_version_not_supported"
        if src not in cm.up or dst not in cm.up or src not in cm.alive or dst not in cm.alive:
            return None, "node_down"
        return dst, ""

    def _run(self, vm: str, dst: str | None, why: str):  # type: ignore[no-untyped-def]
        cm, env, cfg = self.cm, self.cm.env, self.cfg
        spec = cm.spec[vm]
        try:
            while True:  # once more if the VM entered its critical section while waiting for a slot
                asked = env.now
                aborted = False
                # refusals while the VM is in its snapshot critical section
                gate = cm.on_migration_requested  # the backup's veto (block_and_retry, abort_backup)
                while gate or vm in cm.saved or vm in cm.booting:
                    # a migration that cannot go anywhere fails before the backup is asked: it
                    # must not abort (or hold up) a backup for nothing
                    _, cannot = self._destination(vm, dst)
                    if cannot:
                        self.stats.delay_s_total += env.now - asked
                        return self._fail(vm, cannot)
                    # a VM in saved state for its backup, or still booting after a failover, cannot
                    # be live-migrated: wait as for a refusal
                    verdict = "refuse" if vm in cm.saved or vm in cm.booting else gate.ask(vm)
                    if verdict == "refuse":
                        self.stats.refused += 1
                        cm.trace("migration_refused", vm=vm, node=cm.host[vm])
                        if env.now - asked + cfg.retry_s > cfg.max_wait_s:
                            self.stats.delay_s_total += env.now - asked
                            return self._fail(vm, "refused_too_long")
                        yield env.timeout(cfg.retry_s)
                        self.stats.retried += 1
                        continue
                    if verdict == "abort":
                        self.stats.aborted += 1
                        aborted = True
                    break
                self.stats.delay_s_total += env.now - asked
                src = cm.host[vm]
                dst, cannot = self._destination(vm, dst)
                if cannot:
                    return self._fail(vm, cannot)
                assert dst is not None
                if not cm.faults.reachable(src, dst):  # across a partition of the cluster network
                    return self._fail(vm, "cluster_partition")
                if not spec.running or vm not in cm.io.vm_group:
                    # an off VM moves by its configuration only
                    cm.trace("vm_config_moved", vm=vm, node=src, to=dst, why=why)
                    cm.move_vm_ownership(vm, src, dst)
                    self.stats.completed += 1
                    cm.on_vm_migrated.emit(vm, src, dst)
                    return True
                with self.slots[src].request() as slot:
                    yield slot
                    if cm.host[vm] != src or src not in cm.alive or dst not in cm.alive:
                        return self._fail(vm, "node_down")
                    # it may have entered a critical section meanwhile: ask again (unless this
                    # migration has aborted the backup already: the answer stands)
                    verdict = "ok" if aborted or not gate else gate.ask(vm)
                    if verdict != "refuse":
                        if verdict == "abort":
                            self.stats.aborted += 1
                        self.migrating.add(vm)
                        cm.trace("migration_start", vm=vm, node=src, to=dst, why=why)
                        moved = yield from self._precopy(vm, src, dst)
                        if not moved:
                            return self._fail(vm, "interrupted")
                        self.stats.completed += 1
                        cm.on_vm_migrated.emit(vm, src, dst)
                        return True
                # refused now: ask again from the start, towards the destination chosen
                self.heading[vm] = dst
        finally:
            self.stats.in_flight -= 1
            self.migrating.discard(vm)
            self.requested.discard(vm)
            self.heading.pop(vm, None)

    def _precopy(self, vm: str, src: str, dst: str):  # type: ignore[no-untyped-def]
        cm, env, cfg = self.cm, self.cm.env, self.cfg
        spec = cm.spec[vm]
        mem = spec.memory_mib
        cap = cfg.memory_working_set_fraction * mem
        shared = cm.sc.cluster.networks.shared_cluster_and_lm
        from cluster_sim.cluster.topology import lm_nic

        path = [lm_nic(src, shared), lm_nic(dst, shared)]
        to_send, sent, rounds = mem, 0.0, 0
        while True:
            if not cm.faults.reachable(src, dst):  # the cluster network is cut between them
                return False
            t0 = env.now
            flow = cm.net.start(path, size_mib=to_send, tag=("lm", vm))
            cm.faults.pair(flow, src, dst)  # a partition between them ends it
            ok = yield flow.done
            if not ok or src not in cm.alive or dst not in cm.alive:
                return False
            took = env.now - t0
            rate = to_send / took if took > 0 else math.inf
            sent += to_send
            rounds += 1
            remaining = min(spec.dirty_mib_s * took, cap)
            cm.trace("migration_round", vm=vm, node=src, to=dst, round=rounds, mib=round(to_send, 3),
                     s=round(took, 6), dirty_mib=round(remaining, 3))
            if remaining / rate <= cfg.max_downtime_s:
                reason = "threshold"
                break
            if rounds >= cfg.max_rounds:
                reason = "max_rounds"
                break
            if sent > cfg.max_total_factor * mem:  # checked after the round, as Xen does
                reason = "max_total"
                break
            to_send = remaining
        if not cm.faults.reachable(src, dst):
            return False
        # stop-and-copy: the VM is paused on the source for the rest of its memory
        t_pause = env.now
        cm.gateway.cast(src, "set_state", vm, "paused")
        cm.io.stop_vm(vm)
        flow = cm.net.start(path, size_mib=remaining, tag=("lm", vm, "blackout"))
        cm.faults.pair(flow, src, dst)
        ok = yield flow.done
        if not ok or src not in cm.alive or dst not in cm.alive:  # a host died during the blackout
            if cm.on_host(vm, src) and src in cm.up:  # the VM carries on at the source
                cm.gateway.cast(src, "set_state", vm, "running")
                cm.io.start_vm(vm, src)
            return False
        if cfg.resume_s:
            yield env.timeout(cfg.resume_s)
        if src not in cm.alive or dst not in cm.alive:
            if cm.on_host(vm, src) and src in cm.up:
                cm.gateway.cast(src, "set_state", vm, "running")
                cm.io.start_vm(vm, src)
            return False
        downtime = env.now - t_pause
        cm.move_vm_ownership(vm, src, dst)
        cm.vm_downtime[vm] = cm.vm_downtime.get(vm, 0.0) + downtime
        self.stats.downtime_s.append(downtime)
        cm.trace("migration_done", vm=vm, node=src, to=dst, rounds=rounds, stop_reason=reason,
                 sent_mib=round(sent + remaining, 3), downtime_ms=round(downtime * 1000, 3))
        return True
