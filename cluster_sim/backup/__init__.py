"""Backup: one job orchestrator and one module per Windows generation."""

from cluster_sim.backup import ws2008r2, ws2012, ws2012r2, ws2016

BODIES = {
    "ws2008r2": ws2008r2.body,
    "ws2012": ws2012.body,
    "ws2012r2": ws2012r2.body,
    "ws2016": ws2016.body,
}
