"""Cluster nodes: the volatile state of the VMs a host runs, in-process or as Ray actors.

`Node` is a plain class. It holds what a host loses when it crashes: each hosted VM's run
state, whether the guest is frozen for VSS, VHDs mounted on the host, disks hot-added to the
VM, and the VM's memory image. Durable state (disks, checkpoints, storage snapshots, RCT) lives
with the storage array on the driver.

`NodeGateway` is the only way the SimPy driver reaches nodes. `cast` queues an operation whose
answer nobody reads; `submit` queues one and returns a `Handle` whose `get()` reads the answer.
Queued operations go out as one `apply` per node at each liveness poll (`poll`: the answers of
the previous poll's batches are collected first, so the driver rarely waits) and whenever an
answer must be read (`harvest`: a crash, the end of the run). Ray calls grow with polls, not with
operations. Both backends run the same `Node` code and read answers at the same points, so results
are identical.

Modules: node.py (`Node`, what a host holds), local.py and ray_backend.py (the two backends: send
a batch without waiting, collect the answers later; the Ray one rebuilds a lost actor from its
replay log), gateway.py (`NodeGateway`, `Handle`).
"""

from cluster_sim.cluster.nodes.gateway import Handle, NodeGateway
from cluster_sim.cluster.nodes.local import LocalBackend
from cluster_sim.cluster.nodes.node import VM_STATES, Node, NodeDown, Ops, VmVolatile
from cluster_sim.cluster.nodes.ray_backend import MAX_REBUILDS_PER_NODE, BackendFailure, RayBackend

__all__ = ["MAX_REBUILDS_PER_NODE", "VM_STATES", "BackendFailure", "Handle", "LocalBackend", "Node", "NodeDown",
           "NodeGateway", "Ops", "RayBackend", "VmVolatile"]
