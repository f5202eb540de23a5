"""`Node`: what a host holds and loses when it crashes (each hosted VM's run state, a guest
frozen for VSS, VHDs mounted on the host, disks hot-added to a VM). The same class runs in
process (local backend) and as a Ray actor (Ray backend)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VM_STATES = ("running", "paused", "saved", "off")
Ops = list[tuple[str, tuple[Any, ...]]]  # a batch: (operation, arguments), applied in order


class NodeDown(Exception):
    """The node did not answer: its host (actor) is gone."""

    def __init__(self, node: str):
        super().__init__(node)  # args = (node,): SimPy re-creates exceptions from args
        self.node = node

    def __str__(self) -> str:
        return f"{self.node} is down"


@dataclass
class VmVolatile:
    state: str = "running"
    frozen: bool = False
    hot_added: int = 0
    saves: int = 0


@dataclass
class Node:
    name: str
    vms: dict[str, VmVolatile] = field(default_factory=dict)
    ops_applied: int = 0
    mounted: int = 0  # VHDs mounted on this host, all VMs together
    mounts: dict[str, int] = field(default_factory=dict)  # per VM whose snapshot VHDs are mounted here
    stray_ops: int = 0  # operations naming a VM this host does not run (the auditor reports them)

    # -- batch entry point (one per instant) ----------------------------------------------------
    def apply(self, ops: Ops) -> list[Any]:
        out = []
        for method, args in ops:
            out.append(getattr(self, "op_" + method)(*args))
        self.ops_applied += len(ops)
        return out

    # -- operations ------------------------------------------------------------------------------
    def op_reset(self) -> None:
        self.vms.clear()
        self.ops_applied = 0
        self.mounted = 0
        self.mounts.clear()
        self.stray_ops = 0

    def op_host(self, vms: list[tuple[str, str]]) -> int:
        for name, state in vms:
            self.vms[name] = VmVolatile(state=state)
        return len(self.vms)

    def op_evict(self, vm: str) -> dict[str, Any] | None:
        v = self.vms.pop(vm, None)
        return None if v is None else v.__dict__.copy()

    def op_heartbeat(self) -> tuple[int, int]:
        """(VMs hosted, VHDs mounted on the host): a cheap liveness answer."""
        return len(self.vms), self.mounted

    def _vm(self, vm: str) -> VmVolatile:
        v = self.vms.get(vm)
        if v is None:
            # a real host answers "VM not found"; the driver should never ask
            self.stray_ops += 1
            return VmVolatile(state="off")
        return v

    def op_freeze(self, vm: str) -> bool:
        v = self._vm(vm)
        if v.state != "running":
            return False
        v.frozen = True
        return True

    def op_thaw(self, vm: str) -> bool:
        v = self._vm(vm)
        was = v.frozen
        v.frozen = False
        return was

    def op_set_state(self, vm: str, state: str) -> str:
        if state not in VM_STATES:
            raise ValueError(state)
        v = self._vm(vm)
        old = v.state
        if state == "saved" and old != "saved":
            v.saves += 1
        v.state = state
        return old

    def op_mount(self, vm: str, disks: int) -> int:
        """Mount `disks` VHDs of `vm` on the host; returns VHDs mounted on this host now."""
        # the snapshot's VHDs are mounted on the host whether or not the VM still runs here
        self.mounts[vm] = self.mounts.get(vm, 0) + disks
        self.mounted += disks
        return self.mounted

    def op_dismount(self, vm: str, disks: int) -> int:
        n = min(self.mounts.get(vm, 0), disks)
        if n:
            self.mounts[vm] -= n
            if not self.mounts[vm]:
                del self.mounts[vm]
        self.mounted -= n
        return self.mounted

    def op_hot_add(self, vm: str) -> int:
        v = self._vm(vm)
        v.hot_added += 1
        return v.hot_added

    def op_hot_remove(self, vm: str) -> int:
        v = self._vm(vm)
        v.hot_added = max(0, v.hot_added - 1)
        return v.hot_added

    def op_snapshot(self) -> dict[str, Any]:
        return {"vms": {k: v.__dict__.copy() for k, v in sorted(self.vms.items())},
                "mounts": dict(sorted(self.mounts.items())), "stray_ops": self.stray_ops}
