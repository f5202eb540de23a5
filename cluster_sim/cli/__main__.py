"""`python -m cluster_sim.cli`: the `cluster-sim` command."""

from cluster_sim.cli import main

main()
