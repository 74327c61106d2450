"""Progress bars for audit checks that take a while (on stderr, off in tests and pipes)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import track

T = TypeVar("T")


def progress_bar(items: Sequence[T], description: str, *, enabled: bool = True) -> Iterable[T]:
    """Iterate ``items``, drawing a rich progress bar on stderr when ``enabled``."""
    if not enabled:
        return items
    return track(items, description=description, console=Console(stderr=True), transient=True)
