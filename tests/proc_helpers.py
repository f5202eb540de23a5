"""Processes by PID, from /proc (Linux): the tests that kill or stop real processes check by PID that
nothing is left behind (a plain module, not a conftest)."""

from __future__ import annotations

import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None if gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def pids_where(*, parent: int | None = None, cmdline_has: str | None = None) -> list[int]:
    """PIDs of the processes with this parent and/or whose command line holds this text."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        if parent is not None and ((f := _stat_fields(int(proc.name))) is None or int(f[1]) != parent):
            continue
        if cmdline_has is not None:
            try:
                if cmdline_has.encode() not in (proc / "cmdline").read_bytes():
                    continue
            except OSError:
                continue
        out.append(int(proc.name))
    return out


def gone(pid: int, within_s: float = 0.0) -> bool:
    """Has the process exited (a zombie counts: it runs nothing) within `within_s` seconds?"""
    give_up = time.monotonic() + within_s
    while True:
        f = _stat_fields(pid)
        if f is None or f[0] == "Z":
            return True
        if time.monotonic() >= give_up:
            return False
        time.sleep(0.1)
