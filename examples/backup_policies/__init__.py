"""Example backup policies for cluster_sim (README "Test your own backup logic"): each is a
subclass of cluster_sim.backup.policy.Policy that a scenario names by import path, e.g.
`backup.policy: backup_policies.owner_groups:GroupByCsvOwner` (with examples/ on PYTHONPATH)."""
