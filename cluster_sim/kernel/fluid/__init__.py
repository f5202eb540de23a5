"""Fluid resource model: links with capacities, flows with sizes and optional rate caps.

Rates are max-min fair (weighted), found by progressive filling: raise every unfrozen flow's
rate in proportion to its weight until a link saturates or a flow reaches its cap, freeze those
flows, repeat (Bertsekas & Gallager, *Data Networks*, 2nd ed., section 6.5.2). Rates are
recomputed only when a flow starts, ends or changes its cap, and at most once per simulated
instant however many flows change in it. Each flow's `done` event fires exactly once: with
True when its size has been transferred, with False when it is stopped early.

A weight lets one flow stand for n identical flows (n VMs with the same path and demand):
a flow with weight n and cap n*c receives exactly what n flows with cap c would.

The recomputation is incremental (SimGrid's LMM "selective update", made exact for max-min
with caps and taken further): it rests on the bottleneck characterisation of max-min fairness
(the allocation is the unique feasible one in which every flow below its cap crosses a
saturated link on which no flow has a higher level). Only the links that froze flows in the
last filling ("binding" links) tie flows together, so a change first solves, for the binding
links it touches, their saturation equations again with every flow keeping its state (at its
cap, or frozen by a given link), and keeps that if the conditions still hold; otherwise it
re-solves by progressive filling the region of binding links the change touches, closed over
the frozen flows on them, plus any link the new rates would overload. Everything else keeps
its rate. `max_min_fair()` (the full solve, round by round) is the reference the tests compare
it with.

Modules, by job:
- `network.py`: `FluidNetwork` (links, its state, the flow API: start, stop, reroute, set_cap,
  set_ops, set_capacity; one recomputation per instant; the utilisation history) and `Flow`.
- `classes.py`: classes of identical flows, their states (capped, or frozen by a binding link),
  clocks and the per-link sums.
- `allocation.py`: the recomputation: by the sums when the states still hold, else a region solve.
- `completions.py`: when the next flow ends, and ending the flows that are due.
- `maxmin.py`: progressive filling as pure functions, and `max_min_fair`.
"""

from cluster_sim.kernel.fluid.maxmin import max_min_fair
from cluster_sim.kernel.fluid.network import HISTORY, Flow, FluidNetwork

__all__ = ["HISTORY", "Flow", "FluidNetwork", "max_min_fair"]
