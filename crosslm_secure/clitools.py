"""What every ``crosslm`` command group shares: the stderr console, the one-sentence error exit, and
the way a command takes its run (``RUN`` positional, ``--run RUN`` as an alias)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument

from crosslm_secure.errors import CrossLMError


def _keep_argument_help() -> None:
    """Click 8.5 gave arguments a ``help`` of their own; typer 0.20 sets its copy first, so click's ``None``
    replaced every argument's help and ``--help`` showed none. Set typer's copy again after click's."""
    init = TyperArgument.__init__
    if getattr(init, "keeps_help", False):
        return

    @functools.wraps(init)
    def keep(self: TyperArgument, *args: Any, help: str | None = None, **kwargs: Any) -> None:  # noqa: A002
        init(self, *args, help=help, **kwargs)
        self.help = help

    keep.keeps_help = True  # type: ignore[attr-defined]
    TyperArgument.__init__ = keep  # type: ignore[method-assign]


_keep_argument_help()

# soft_wrap: never insert line breaks. An error is one sentence (tests and scripts grep for it, and a
# path must survive copy and paste) and tables.md is Markdown; the terminal wraps long lines itself.
console = Console(stderr=True, soft_wrap=True)

EXIT_STOPPED_EARLY = 3
"""``crosslm run``'s exit status for a run that ended before its last round (budget exhausted, quorum lost)."""

RunArgument = Annotated[
    Path | None, typer.Argument(metavar="RUN", help="The run folder, e.g. runs/<id>.", show_default=False)
]
RunAlias = Annotated[Path | None, typer.Option("--run", help="Same as RUN (kept for scripts).", show_default=False)]


def stdout_console() -> Console:
    """A console for results on stdout; piped or captured, 160 columns so a table is not squeezed into 80."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=160)


def fail(exc: CrossLMError, code: int = 2) -> NoReturn:
    """Print ``error: <one sentence>`` on stderr and exit with ``code``."""
    # escape: a sentence that quotes user input ("run.name=[x", a path with brackets) is text, not markup.
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(code)


def pick_run(command: str, positional: Path | None, alias: Path | None, code: int = 2) -> Path:
    """The run a command was given as ``RUN`` or ``--run RUN``; exits with ``code`` when neither or two differ."""
    if positional is None and alias is None:
        fail(CrossLMError(f"{command}: which run? give its folder, e.g. `crosslm {command} runs/<id>`"), code)
    if positional is not None and alias is not None and Path(positional) != Path(alias):
        fail(CrossLMError(f"{command}: RUN {positional} and --run {alias} differ; give the run once"), code)
    return Path(positional if positional is not None else alias)
