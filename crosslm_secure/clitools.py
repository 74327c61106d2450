"""What every ``crosslm`` command group shares: the stderr console and the one-sentence error exit."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from crosslm_secure.errors import CrossLMError

# soft_wrap: never insert line breaks. An error is one sentence (tests and scripts grep for it, and a
# path must survive copy and paste) and tables.md is Markdown; the terminal wraps long lines itself.
console = Console(stderr=True, soft_wrap=True)


def fail(exc: CrossLMError, code: int = 2) -> NoReturn:
    """Print ``error: <one sentence>`` on stderr and exit with ``code``."""
    # escape: a sentence that quotes user input ("run.name=[x", a path with brackets) is text, not markup.
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(code)
