"""The results folder of `cluster-sim run`: whether --out may take this run's results (run.json
says which run a folder holds), the scratch folder beside it swapped in with one rename at the
end, and run.json (written last: the run completed)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from cluster_sim.scenario import Scenario

RUN_FILE = "run.json"  # written last into a results folder: the run completed
RESOLVED_FILE = "scenario.resolved.yaml"


def _now() -> str:
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")  # ISO 8601, with the UTC offset


def _unusable_out(dest: Path, key: dict[str, Any] | None = None, force: bool = False) -> str | None:
    """Why `dest` cannot take this run's results folder (None: it can). A run replaces the whole folder,
    so an existing one must be empty, or hold this same run's results (a re-run: same scenario, seed,
    overrides and generations), or hold another run's and `force` say to replace them. A folder that
    does not hold results is never replaced."""
    if not dest.exists():
        return None
    if not dest.is_dir():
        return f"{dest} exists and is not a folder"
    items = list(dest.iterdir())
    if not items:
        return None
    ours = (dest / RUN_FILE).is_file() or (dest / "comparison.csv").is_file() or any(
        (p / "summary.json").is_file() for p in items if p.is_dir())
    if not ours:
        return (f"{dest} is a folder that does not hold cluster-sim results (no {RUN_FILE}, comparison.csv or "
                f"*/summary.json); a run replaces the whole folder: choose another --out or empty it")
    if force or key is None:
        return None
    try:
        info = json.loads((dest / RUN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return (f"{dest} holds results that no {RUN_FILE} describes (an older cluster-sim's, or copied in): "
                f"--force replaces them, or choose another --out")
    except (OSError, ValueError) as exc:
        return f"{dest / RUN_FILE} is unreadable ({exc}): --force replaces the folder, or choose another --out"
    differences = _run_differences(info if isinstance(info, dict) else {}, key)
    if differences:
        return (f"{dest} holds the results of another run ({'; '.join(differences)}): --force replaces them, "
                f"or choose another --out")
    return None


def _run_key(sc: Scenario, file: Path, sets: list[str], override_file: Path | None,
             gens: list[str]) -> dict[str, Any]:
    """What makes a run the same run (the backend, the workers and the tool's version do not)."""
    return {"scenario": sc.name, "scenario_path": str(file.resolve()), "seed": sc.seed, "set": list(sets),
            "file": str(override_file.resolve()) if override_file else None, "generations": list(gens)}


def _run_differences(info: dict[str, Any], key: dict[str, Any]) -> list[str]:
    """How the run recorded in a run.json differs from `key` ("what there, what now")."""
    over = info.get("overrides") if isinstance(info.get("overrides"), dict) else {}

    def shown(v: Any) -> str:
        if isinstance(v, list):
            return ", ".join(map(str, v)) or "none"
        return "none" if v is None else str(v)

    pairs = [("scenario", info.get("scenario"), key["scenario"]), ("seed", info.get("seed"), key["seed"]),
             ("--set", over.get("set", []), key["set"]), ("generations", info.get("generations"), key["generations"])]
    if "scenario_path" in info:  # (run.json of an older version lacks these two)
        pairs.insert(1, ("scenario file", info["scenario_path"], key["scenario_path"]))
    if "file" in over:
        pairs.append(("--overrides", over["file"], key["file"]))
    return [f"{what} {shown(there)} there, {shown(now)} now" for what, there, now in pairs if there != now]


def _clear_stale_scratch(dest: Path) -> None:
    """Remove scratch folders beside `dest` left by runs that were killed (their process is gone)."""
    import re

    pat = re.compile(re.escape(f".{dest.name}.") + r"(?:cluster-sim|old)-(\d+)-")
    for p in dest.parent.iterdir():
        m = pat.match(p.name)
        if m and p.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 with RENAME_EXCHANGE). False where the system
    or the file system cannot; an error of the swap itself raises OSError."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _publish(scratch: Path, dest: Path) -> None:
    """Put the finished folder `scratch` in place of `dest` with one rename; the old folder stays
    until that rename has succeeded, then goes."""
    if not dest.exists():
        os.rename(scratch, dest)
        return
    if _exchange(scratch, dest):
        shutil.rmtree(scratch, ignore_errors=True)  # (it holds the old results now)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-{os.getpid()}-", dir=dest.parent))
    os.rename(dest, old / dest.name)
    try:
        os.rename(scratch, dest)
    except OSError:
        os.rename(old / dest.name, dest)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _write_run_json(path: Path, sc: Scenario, file: Path, sets: list[str], gens: list[str], started: str,
                    result, key: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from cluster_sim.version import package_version, sim_version

    info = {
        "tool": "cluster-sim",
        "version": package_version(),
        "sim_version": sim_version(),
        "argv": list(sys.argv),
        "scenario_file": str(file),
        "scenario_path": key["scenario_path"],
        "scenario_resolved": RESOLVED_FILE,
        "scenario": sc.name,
        "seed": sc.seed,
        "overrides": {"set": list(sets), "file": key["file"], "generations": list(gens)},
        "backend": result.backend,
        "generations": [g.summary.generation for g in result.generations],
        "audit_ok": all(g.summary.audit.ok for g in result.generations),
        "notes": list(result.notes),
        "started_at": started,
        "ended_at": _now(),
    }
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
