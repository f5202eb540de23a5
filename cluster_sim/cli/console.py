"""The terminal of every command: stdout and stderr consoles, exit codes, one error message."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)
EXIT_BAD_INPUT = 2
EXIT_BACKEND_FAILED = 3  # the machinery (a Ray node actor) failed: no result, not a simulated fault


def error(message: str) -> None:
    """One error message on stderr, printed as is (no markup, no wrapping)."""
    err.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def from_command_line(ctx: typer.Context, name: str) -> bool:
    """Was this option typed on the command line (not taken from the environment)?"""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
