"""Walls between parties that share one process: no party opens another party's folder.

``crosslm run --sites DIR`` plays every party of a pilot in one process. Each party acts
inside :func:`acting_as` (the coordinator as ``server``, each site as its own name), and
:func:`walls` installs a Python audit hook (``sys.addaudithook``) that refuses, with
``PermissionError``, any ``open``/``os.listdir``/``os.scandir`` of a path under a site's
folder by anyone but that site. A breach fails the run instead of passing silently.

Audit hooks see Python-level file access only: a native library that opens a file itself
(safetensors' mmap, a tokenizer's Rust reader) is invisible to them. The parties' code reads
its files through Python first (config, identity, records), so a coordinator that reached
for a site's folder would be caught there.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

_acting: contextvars.ContextVar[str | None] = contextvars.ContextVar("crosslm_party", default=None)
_walls: list[dict[str, str]] = []
"""Active walls: party name -> its folder (absolute, with a trailing separator)."""
_hook_installed = False
_WATCHED = frozenset({"open", "os.listdir", "os.scandir"})


def current_party() -> str | None:
    """The party the running code acts for (None outside any party)."""
    return _acting.get()


@contextmanager
def acting_as(party: str) -> Iterator[None]:
    """Run the block as ``party``: it may open its own folder and no other party's."""
    token = _acting.set(party)
    try:
        yield
    finally:
        _acting.reset(token)


def owner_of(path: str, folders: Mapping[str, str]) -> str | None:
    """The party whose folder holds ``path`` (None when no watched folder does)."""
    full = os.path.abspath(path)
    for party, folder in folders.items():
        if full == folder[:-1] or full.startswith(folder):
            return party
    return None


def breach(event: str, args: tuple) -> str | None:
    """Why this audit event crosses a wall (None when it does not)."""
    if event not in _WATCHED or not _walls or not args:
        return None
    target = args[0]
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    if not isinstance(target, str | os.PathLike):
        return None  # an open file descriptor: already opened, checked then
    acting = _acting.get()
    for folders in _walls:
        owner = owner_of(os.fspath(target), folders)
        if owner is not None and owner != acting:
            who = acting or "code acting for no party"
            return f"isolation: {who} tried to open {os.fspath(target)}, which is {owner}'s; only {owner} may"
    return None


def _hook(event: str, args: tuple) -> None:
    reason = breach(event, args)
    if reason is not None:
        raise PermissionError(reason)


@contextmanager
def walls(folders: Mapping[str, Path]) -> Iterator[None]:
    """Refuse, while the block runs, any read of ``folders[p]`` by a party other than ``p``.

    An audit hook cannot be removed, so it is installed once per process and is inert while
    no wall is up.
    """
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_hook)
        _hook_installed = True
    wall = {party: os.path.join(os.path.abspath(folder), "") for party, folder in folders.items()}
    _walls.append(wall)
    try:
        yield
    finally:
        _walls.remove(wall)
