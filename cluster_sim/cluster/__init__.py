"""The cluster control plane: nodes, CSVs, storage array, VM I/O, migrations, failover."""
