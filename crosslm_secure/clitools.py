"""What every ``crosslm`` command group shares: the stderr console and the one-sentence error exit."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from crosslm_secure.errors import CrossLMError

console = Console(stderr=True)


def fail(exc: CrossLMError, code: int = 2) -> NoReturn:
    """Print ``error: <one sentence>`` on stderr and exit with ``code``."""
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(code)
