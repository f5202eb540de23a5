"""Mixed-version clusters (cluster OS rolling upgrade): the Windows version of each node, the
cluster's functional level and the VMs' configuration versions, as a scenario states them, and the
checks that reject what a real cluster refuses [MS]:

- a rolling upgrade mixes Windows Server 2012 R2 and 2016 nodes only (`cluster.node_versions`);
- the functional level is ws2012r2 while any node runs 2012 R2; it is raised (for ever) only once
  every node runs 2016 (`raise_functional_level`);
- a VM of configuration version above 5.0 runs on 2016 nodes only; Update-VMVersion
  (`upgrade_vm_config`) needs functional level ws2016.

`timeline(sc)` replays the version events in time order and returns the first problem as a
(field path, reason) pair; the simulation applies the same events (cluster/versions.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluster_sim.scenario.events import RaiseFunctionalLevel, UpgradeNode, UpgradeVmConfig

if TYPE_CHECKING:
    from cluster_sim.scenario.model import Scenario

NODE_VERSIONS = ("ws2012r2", "ws2016")  # [MS] cluster OS rolling upgrade: 2012 R2 -> 2016
OLD_CONFIG = "5.0"  # [seeds, MS] Windows Server 2012 R2's configuration version (no RCT)


def needs_2016(config_version: str) -> bool:
    """A configuration version above 5.0 runs on Windows Server 2016 (and later) hosts only [MS]."""
    return config_version != OLD_CONFIG


def node_versions(sc: Scenario) -> dict[str, str] | None:
    """node -> its Windows version at t=0, or None for a cluster of one version (as before)."""
    if sc.cluster.node_versions is None:
        return None
    return {n: ver for ver, nodes in sc.cluster.node_versions.items() for n in nodes}


def functional_level(sc: Scenario) -> str | None:
    """The level at t=0: as given, else the lowest node version (a cluster built on 2016 is at 2016)."""
    versions = node_versions(sc)
    if versions is None:
        return None
    if sc.cluster.functional_level is not None:
        return sc.cluster.functional_level
    return "ws2012r2" if "ws2012r2" in versions.values() else "ws2016"


def check(sc: Scenario) -> None:
    """Raise ValueError("path: reason") for the first version rule the scenario breaks."""
    nodes = [f"node-{i + 1}" for i in range(sc.cluster.nodes)]
    given = sc.cluster.node_versions
    version_events = [(i, ev) for i, ev in enumerate(sc.events)
                      if isinstance(ev, UpgradeNode | RaiseFunctionalLevel | UpgradeVmConfig)]
    if given is None:
        if sc.cluster.functional_level is not None:
            raise ValueError("cluster.functional_level: needs cluster.node_versions (which Windows version each "
                             "node runs); without it every node runs the generation the run names")
        if version_events:
            i, ev = version_events[0]
            raise ValueError(f"events[{i}]: {ev.kind} needs cluster.node_versions (a mixed-version cluster)")
        return
    seen: dict[str, str] = {}
    for ver, listed in given.items():
        for j, n in enumerate(listed):
            if n not in nodes:
                raise ValueError(f"cluster.node_versions.{ver}[{j}]: unknown node {n!r} (the cluster has "
                                 f"node-1 .. node-{len(nodes)})")
            if n in seen:
                raise ValueError(f"cluster.node_versions.{ver}[{j}]: {n} is listed twice (also under {seen[n]})")
            seen[n] = ver
    missing = [n for n in nodes if n not in seen]
    if missing:
        raise ValueError(f"cluster.node_versions: {', '.join(missing)} not listed; every node needs its Windows "
                         f"version (ws2012r2 or ws2016)")
    old = [n for n in nodes if seen[n] == "ws2012r2"]
    if sc.cluster.functional_level == "ws2016" and old:
        raise ValueError(f"cluster.functional_level: ws2016 needs every node on ws2016, but {', '.join(old)} "
                         f"{'runs' if len(old) == 1 else 'run'} ws2012r2 (the level is raised only after the last "
                         f"node is upgraded)")
    level = functional_level(sc)
    for k, t in enumerate(sc.fleet):
        if needs_2016(t.config_version) and len(old) == len(nodes):
            raise ValueError(f"fleet[{k}].config_version: {t.config_version} runs on ws2016 nodes only and every "
                             f"node runs ws2012r2 (use 5.0)")
    _replay(sc, dict(seen), level, version_events)


def _replay(sc: Scenario, versions: dict[str, str], level: str | None, events: list) -> None:  # type: ignore[type-arg]
    """The version events in time order (an upgrade's node is ws2016 once it has rejoined)."""
    upgraded_at: dict[str, float] = {}
    templates = {t.template for t in sc.fleet}
    for i, ev in sorted(events, key=lambda ie: (ie[1].at_s, ie[0])):
        where = f"events[{i}]"
        if isinstance(ev, UpgradeNode):
            if versions.get(ev.node) == "ws2016":
                raise ValueError(f"{where}.node: {ev.node} already runs ws2016 at {ev.at_s:g} s")
            versions[ev.node] = "ws2016"
            upgraded_at[ev.node] = ev.at_s + ev.reinstall_s
        elif isinstance(ev, RaiseFunctionalLevel):
            late = sorted(n for n, v in versions.items() if v != "ws2016" or upgraded_at.get(n, 0.0) > ev.at_s)
            if late:
                raise ValueError(f"{where}.at_s: raise_functional_level at {ev.at_s:g} s, but {', '.join(late)} "
                                 f"{'does' if len(late) == 1 else 'do'} not run ws2016 yet (the level is raised "
                                 f"only once every node has rejoined as ws2016)")
            level = "ws2016"
        elif isinstance(ev, UpgradeVmConfig):
            if level != "ws2016":
                raise ValueError(f"{where}.at_s: upgrade_vm_config at {ev.at_s:g} s needs functional level ws2016 "
                                 f"(raise_functional_level first); the level is {level} then")
            if ev.template is not None and ev.template not in templates:
                raise ValueError(f"{where}.template: unknown template {ev.template!r}")
            if ev.vms is not None:
                known = sc.vm_names()
                for j, vm in enumerate(ev.vms):
                    if vm not in known:
                        raise ValueError(f"{where}.vms[{j}]: unknown VM {vm!r}")
