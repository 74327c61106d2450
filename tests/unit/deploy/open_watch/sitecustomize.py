"""Loaded by every Python process a pilot test starts (PYTHONPATH): records opens under the sites folder.

Each process's party is the site whose folder its command line names (a site's worker names
``--site DIR/<site>``, its SuperNode its key and CA there); the SuperLink and the ServerApp name
no site. Every open of a path under ``CROSSLM_WATCH_SITES`` is written to ``CROSSLM_WATCH_LOG`` as
one JSON line: process, parties named, path. The test then finds any open of a site's folder by
a process that does not name that site.
"""

import json
import os
import sys

_root = os.environ.get("CROSSLM_WATCH_SITES")
_log = os.environ.get("CROSSLM_WATCH_LOG")
_busy = False


def _named() -> list[str]:
    prefix = os.path.join(_root, "")
    names = set()
    for word in sys.argv:
        for part in str(word).replace("=", " ").replace('"', " ").split():
            full = os.path.abspath(part)
            if full.startswith(prefix):
                names.add(os.path.relpath(full, _root).split(os.sep)[0])
    return sorted(names)


def _write(record: dict) -> None:
    fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def _hook(event: str, args: tuple) -> None:
    global _busy
    if event != "open" or _busy or not args or not isinstance(args[0], str | bytes | os.PathLike):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if not path.startswith(os.path.join(_root, "")):
        return
    _busy = True
    try:
        process = os.path.basename(sys.argv[0]) if sys.argv else "?"
        _write({"pid": os.getpid(), "process": process, "argv": sys.argv[:6], "names": _named(), "path": path})
    finally:
        _busy = False


if _root and _log:
    _root = os.path.abspath(_root)
    sys.addaudithook(_hook)
    _write({"pid": os.getpid(), "process": os.path.basename(sys.argv[0]) if sys.argv else "?", "armed": True})
