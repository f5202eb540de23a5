"""Kernel: simulated time (SimPy), named random streams, the fluid resource model, the trace."""
