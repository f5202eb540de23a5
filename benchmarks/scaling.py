"""The headline scenario scaled to more VMs, for the scaling benchmarks and the 8000vm-64node scenario.

`scaled_headline(vms)` multiplies `scenarios/800vm-8node.yaml` by k = vms / 800:
- every template's count x k (rounded; the largest template takes the rounding remainder);
- nodes and CSVs: 8 x k, at most 64 (a failover cluster's limit [MS]); CSVs = nodes;
- the array's read and write bandwidth and IOPS, and the backup target, x k (the storage grows
  with the VMs it serves); its controllers with the nodes (2 per 8 nodes, so each controller
  queues as many snapshot requests from the nodes' copy slots as in the headline; 16 at most);
- node memory in proportion to VMs per node (1024 GiB for 100 VMs per node);
- events kept in proportion: the headline's 24 scripted migrations (one every 1800 s from 300 s
  to 41,700 s, every 23rd win-app VM from win-app-0008) become 24 x k, evenly over the same span,
  the same spacing of VMs; load balancing unchanged (every 900 s, at most 2 moves a pass).

`python benchmarks/scaling.py 8000 > scenarios/8000vm-64node.yaml` writes the shipped file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from cluster_sim.scenario import Array

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = ROOT / "scenarios" / "800vm-8node.yaml"
HEADLINE_VMS = 800
MAX_NODES = 64  # [MS] a failover cluster has at most 64 nodes


def scaled_headline(vms: int) -> dict[str, Any]:
    """The headline scenario as a dict, scaled to `vms` VMs (see the module docstring)."""
    data = yaml.safe_load(HEADLINE.read_text(encoding="utf-8"))
    k = vms / HEADLINE_VMS
    counts = [round(t["count"] * k) for t in data["fleet"]]
    biggest = max(range(len(counts)), key=lambda i: data["fleet"][i]["count"])
    counts[biggest] += vms - sum(counts)
    for t, c in zip(data["fleet"], counts, strict=True):
        t["count"] = c
    nodes0 = data["cluster"]["nodes"]
    nodes = min(MAX_NODES, round(nodes0 * k))
    per_node = (vms / nodes) / (HEADLINE_VMS / nodes0)
    data["name"] = f"{vms}vm-{nodes}node"
    data["cluster"]["nodes"] = nodes
    data["cluster"]["node_memory_gib"] = round(data["cluster"]["node_memory_gib"] * per_node, 3)
    data["cluster"]["networks"]["backup_target_mib_s"] = round(data["cluster"]["networks"]["backup_target_mib_s"] * k, 3)
    data["storage"]["csvs"] = nodes
    arr = data["storage"]["array"]
    for key in ("read_mib_s", "write_mib_s", "iops"):
        arr[key] = round(arr[key] * k, 3)
    # snapshot requests come from the nodes' copy slots, so controllers grow with the nodes: each
    # serves as many concurrent requests as in the headline (at most 16 [P], the scenario's limit)
    arr["controllers"] = min(16, arr.get("controllers", Array.model_fields["controllers"].default) * nodes // nodes0)
    scripted = [e for e in data["events"] if e["kind"] == "migrate_vm"]
    others = [e for e in data["events"] if e["kind"] != "migrate_vm"]
    app = next(t for t in data["fleet"] if t["template"] == "win-app")
    n_mig = round(len(scripted) * k)
    every_s = (scripted[-1]["at_s"] - scripted[0]["at_s"]) / max(1, n_mig - 1)
    first_vm = int(scripted[0]["vm"].rsplit("-", 1)[1])
    vm_step = int(scripted[1]["vm"].rsplit("-", 1)[1]) - first_vm
    events = []
    for i in range(n_mig):
        idx = first_vm + i * vm_step
        if idx > app["count"]:
            break
        at = scripted[0]["at_s"] + i * every_s
        events.append({"at_s": round(at, 3), "kind": "migrate_vm", "vm": f"win-app-{idx:04d}"})
    data["events"] = events + others
    return data


def render(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=200)


def without_comments(text: str) -> str:
    """A scenario file's text without its comment lines (to compare it with `render`)."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"


def main() -> None:
    vms = int(sys.argv[1])
    data = scaled_headline(vms)
    header = (f"# The headline scenario (800vm-8node.yaml) scaled to {vms} VMs by benchmarks/scaling.py:\n"
              f"# `python benchmarks/scaling.py {vms}` regenerates this file. Every template's count, the\n"
              "# array's bandwidth and IOPS and the backup target scale with the VMs; nodes and CSVs to at most\n"
              "# 64, the array's controllers with the nodes; node memory with VMs per node; the scripted live\n"
              "# migrations in proportion (over the same span, the same VM spacing); load balancing unchanged.\n")
    sys.stdout.write(header + render(data))


if __name__ == "__main__":
    main()
