"""Latency-aware throttling: no new snapshot group (or ws2016 set) starts while the VMs' I/O latency
(99th percentile, as last sampled) is above a limit; it checks again every `recheck_s`, and after
`max_wait_s` of waiting a group starts anyway (a backup that never runs protects nothing)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cluster_sim.backup.policy import ClusterView, Policy


class LatencyThrottleArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p99_limit_ms: float = Field(20.0, gt=0)  # [P] pause new snapshots above this p99 latency
    recheck_s: float = Field(30.0, gt=0)  # [P] how often a paused group looks again
    max_wait_s: float = Field(1800.0, ge=0)  # [P] a group waits at most this long


class LatencyThrottle(Policy):
    Args = LatencyThrottleArgs

    def __init__(self, args: LatencyThrottleArgs, cfg):  # type: ignore[no-untyped-def]
        super().__init__(args, cfg)
        self.waited_s: dict[tuple[str, ...], float] = {}  # group -> seconds it has waited
        self.pauses = 0  # waits asked (each recheck_s long)

    def delay_group_s(self, view: ClusterView, node: str, vms: list[str]) -> float:
        key = tuple(vms)
        p99 = view.latency_p99_ms()
        waited = self.waited_s.get(key, 0.0)
        if p99 is None or p99 <= self.args.p99_limit_ms or waited >= self.args.max_wait_s:
            self.waited_s.pop(key, None)
            return 0.0
        wait = min(self.args.recheck_s, self.args.max_wait_s - waited)
        self.waited_s[key] = waited + wait
        self.pauses += 1
        return wait
