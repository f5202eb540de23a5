"""Who gets what: DOMAIN.md's eligibility table, per VM and generation.

`plan(vm, generation, allow_fallback)` returns the mode the generation will attempt and a
reason that explains anything short of an online application-consistent backup:
- `app`: online, application-consistent (guest VSS through the Backup integration service)
- `crash`: online, crash-consistent (no guest VSS; Linux guests have their file systems frozen)
- `saved_state`: the VM is put in saved state for the snapshot (consistent, but down meanwhile)
- `offline`: the VM is not running; its files are copied as they are
- `fail`: the generation cannot back it up (reason says why)
Requirements that fail only at a later step (a missing SCSI controller on ws2012r2, which
fails at the hot-add of the AutoRecovery disk) are checked by that step, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster_sim.scenario.placement import VmSpec


@dataclass(frozen=True)
class Plan:
    mode: str  # app | crash | saved_state | offline | fail
    reason: str = ""


def _windows_online_app_capable_legacy(vm: VmSpec) -> str:
    """ws2008r2/ws2012 need every volume NTFS on basic disks and the backup service [seeds]."""
    if not vm.integration_services or not vm.integration_services_backup:
        return "integration_services_backup_off"
    if vm.dynamic_disks:
        return "dynamic_disks"
    if vm.filesystem != "ntfs":
        return "non_ntfs_volume"
    return ""


def plan(vm: VmSpec, generation: str, allow_fallback: bool = True) -> Plan:
    if not vm.running:
        return Plan("offline", "vm_not_running")
    windows = vm.guest_os == "windows"
    if generation in ("ws2008r2", "ws2012"):
        if not windows:
            return Plan("saved_state", "linux_guest")
        why = _windows_online_app_capable_legacy(vm)
        return Plan("saved_state", why) if why else Plan("app")
    if generation == "ws2012r2":
        if windows:
            if vm.integration_services and vm.integration_services_backup:
                return Plan("app")  # dynamic disks / non-NTFS are fine now [seeds]
            return Plan("crash", "integration_services_backup_off")
        if vm.integration_services:
            return Plan("crash", "linux_frozen")
        return Plan("crash", "no_integration_services")
    if generation == "ws2016":
        # Production checkpoint: VSS in Windows guests, file-system freeze in Linux guests [MS].
        if windows and vm.integration_services and vm.integration_services_backup:
            return Plan("app")
        if not windows and vm.integration_services:
            return Plan("crash", "linux_frozen")
        if allow_fallback:
            return Plan("crash", "standard_checkpoint_fallback")
        return Plan("fail", "production_checkpoint_failed")
    raise ValueError(f"unknown generation {generation!r}")
