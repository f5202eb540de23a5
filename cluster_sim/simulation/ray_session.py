"""Ray for a run: the session this process starts or joins (never `ray stop`), the address check,
the package shipped to workers."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from cluster_sim.scenario.policy_ref import policy_code_paths

_EXCLUDES = ["__pycache__/", "*.pyc"]  # not shipped with the code in py_modules


def package_runtime_env() -> dict[str, Any]:
    """Ray runtime_env that ships this package's code to every worker of the job (`py_modules`):
    the nodes of a Ray cluster need Ray and the dependencies, not cluster_sim itself."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # cluster_sim/ (this is simulation/)
    # ... and the code of the backup policies the scenarios named (scenario/policy_ref.py)
    code = [p for p in policy_code_paths() if os.path.exists(p)]  # (a package uninstalled since: not there)
    return {"py_modules": [package, *code], "excludes": _EXCLUDES}


def local_policy_code() -> list[str]:
    """The code of the policies named so far that the workers of a local Ray instance would not
    find: they start with this machine's packages and PYTHONPATH, not with a `sys.path` entry this
    process added (a notebook, a test)."""
    import site

    found = {os.path.realpath(p) for p in [*site.getsitepackages(), site.getusersitepackages(),
                                           *os.environ.get("PYTHONPATH", "").split(os.pathsep)] if p}
    return [p for p in policy_code_paths()
            if os.path.exists(p) and os.path.realpath(os.path.dirname(p)) not in found]


class RayUnavailable(RuntimeError):
    """Ray cannot be started or joined: nobody answers at the address, or it refuses us."""


_AUTH_HELP = ("the Ray cluster at {address} uses token authentication and this process has no valid token "
              "(RAY_AUTH_MODE={mode}). Set RAY_AUTH_MODE=token and give the cluster's token: "
              "RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file holding it> (on the head node, "
              "`ray get-auth-token` prints it), then run again")

# Asks the GCS at an address for its cluster id, in a child process (the Ray client library retries for
# tens of seconds and logs every try on stderr; a child is quiet and can be stopped).
_GCS_PROBE = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1])
except Exception as exc:
    print(type(exc).__name__)
else:
    print("ok")
"""


def _auth_refused(exc: BaseException | None) -> bool:
    """Does this ray.init failure (or anything in its chain) say the token was missing or wrong?"""
    seen = 0
    while exc is not None and seen < 10:
        text = f"{type(exc).__name__}: {exc}"
        if "AuthenticationError" in text or "InvalidAuthToken" in text or "Unauthenticated" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def check_ray_address(address: str, timeout_s: float = 5.0, probe_timeout_s: float = 20.0) -> None:
    """Fail fast, before ray.init (which retries for minutes), on a `host:port` nobody answers on,
    and on a cluster that refuses us for want of its authentication token. Raises RayUnavailable."""
    import socket
    import subprocess

    m = re.fullmatch(r"(ray://)?\[?([^\]/]+?)\]?:(\d+)", address.strip())
    if not m:
        return  # "auto" and the like: leave it to ray.init
    try:
        socket.create_connection((m.group(2), int(m.group(3))), timeout=timeout_s).close()
    except OSError as exc:
        raise RayUnavailable(f"cannot connect to {address}: {exc.strerror or exc}") from None
    if m.group(1):
        return  # a Ray Client server (ray://), not the GCS: ray.init reports its own errors
    try:
        probe = subprocess.run([sys.executable, "-c", _GCS_PROBE, address.strip()], capture_output=True,
                               text=True, timeout=probe_timeout_s)
    except subprocess.TimeoutExpired:
        return  # no verdict (not a Ray GCS?): ray.init says what it finds
    last = (probe.stdout.strip().splitlines() or [""])[-1]
    if last == "AuthenticationError":
        raise RayUnavailable(_AUTH_HELP.format(address=address, mode=os.environ.get("RAY_AUTH_MODE", "unset")))


class RaySession:
    """Starts a local Ray instance (or joins `address`, shipping this package to its workers with
    `package_runtime_env`; a local one gets the policy code its workers would not find:
    `local_policy_code`) and shuts down only what it started.

    Raises RayUnavailable (with what to do) if the address does not answer or refuses us."""

    def __init__(self, num_cpus: int | None = None, address: str | None = None):
        import ray

        self.ray = ray
        self.started = False
        if address:
            check_ray_address(address)
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                if address:
                    ray.init(address=address, runtime_env=package_runtime_env(), **kw)
                else:
                    # the workers share this machine's packages and PYTHONPATH, not this process's
                    # sys.path: a policy module found through a sys.path entry a notebook or a test
                    # added goes with them
                    code = local_policy_code()
                    env = {"runtime_env": {"py_modules": code, "excludes": _EXCLUDES}} if code else {}
                    ray.init(address="local", num_cpus=num_cpus or min(2, os.cpu_count() or 1), **env, **kw)
            except Exception as exc:  # noqa: BLE001 - ray.init raises ConnectionError, RuntimeError...
                if _auth_refused(exc):
                    raise RayUnavailable(_AUTH_HELP.format(address=address or "local",
                                                           mode=os.environ.get("RAY_AUTH_MODE", "unset"))) from None
                raise
            self.started = True

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False
