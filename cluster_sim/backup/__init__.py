"""Backup: the job orchestrator, the phases every generation is composed of, and one module per
Windows generation (see registry.py)."""
