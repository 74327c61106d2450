"""A content-addressed cache for pure, repeated work (same model weights, same data, same settings).

A sweep repeats work that does not depend on its seed or epsilon: the round-0 evaluation of the
same base LLM on the same evaluator set, and the perplexity of the same base model. Each result
is stored under a key that hashes everything it depends on (the weights' sha256, the data, the
settings, the library versions, and ``CODE_VERSION`` of the code that computes it), so a changed
input is a different key and never a stale hit.

Every entry carries the sha256 of its payload. An entry that is truncated, edited or otherwise
does not match its hash is deleted and recomputed, never trusted. Entries are written atomically
(temporary file, then rename), so a crash never leaves a half-written entry under a real name.

Only public or server-side results belong in the shared cache. A client's private records (or
features derived from them) must never be put in it: a site caches those in its own folder,
``sites/<owner>/`` (:func:`site_cache`), on its own machine.

The cache lives in ``$CROSSLM_CACHE_DIR`` when set (``off`` disables it), else in
``$XDG_CACHE_HOME/crosslm-secure/results`` (``~/.cache/...`` when unset).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crosslm_secure.storage import user_path

CODE_VERSION = 1
"""Bump when the code behind a cached result changes what it computes: old entries stop matching."""

ENV_VAR = "CROSSLM_CACHE_DIR"
SITES = "sites"
"""Subfolder of the cache root with one private folder per site (see :func:`site_cache`)."""
_MAGIC = b"crosslm-cache-1\n"


def content_key(*parts: Any) -> str:
    """sha256 (hex) of ``parts`` as canonical JSON (sorted keys; anything not JSON via ``str``)."""
    text = json.dumps([CODE_VERSION, *parts], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class CacheWarning(UserWarning):
    """The cache could not be read or written: the run goes on, recomputing what it would have reused."""


class ContentCache:
    """JSON results by content key, in ``root/<namespace>/<key[:2]>/<key>.json``."""

    def __init__(self, root: Path | str) -> None:
        self.root = user_path(root)
        self.hits = 0
        self.misses = 0
        self.warned: set[str] = set()

    def _path(self, namespace: str, key: str) -> Path:
        if not namespace.replace("_", "").replace("-", "").isalnum() or len(key) != 64:
            raise ValueError(f"cache namespace {namespace!r} or key {key!r} is not valid")
        return self.root / namespace / key[:2] / f"{key}.json"

    def get(self, namespace: str, key: str) -> Any | None:
        """The stored value, or None when there is none or it fails its hash check (then it is deleted)."""
        payload = self.get_bytes(namespace, key)
        if payload is None:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            self._path(namespace, key).unlink(missing_ok=True)
            return None

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``, atomically."""
        self.put_bytes(namespace, key, _json_bytes(value))

    def get_bytes(self, namespace: str, key: str) -> bytes | None:
        """The stored bytes, or None when there are none or they fail their hash check (then deleted)."""
        path = self._path(namespace, key)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # no entry; a blocked folder warns on writing
            return None
        except OSError as exc:  # unreadable (permissions, I/O): recompute, and say why once
            self._warn(f"result cache: cannot read {path} ({exc.strerror or exc}); recomputing it")
            return None
        header, _, payload = raw.removeprefix(_MAGIC).partition(b"\n")
        try:
            meta = json.loads(header)
            if not raw.startswith(_MAGIC) or meta.get("key") != key:
                raise ValueError("wrong header")
            if meta.get("sha256") != hashlib.sha256(payload).hexdigest():
                raise ValueError("payload does not match its hash")
        except (ValueError, AttributeError):
            path.unlink(missing_ok=True)
            return None
        return payload

    def put_bytes(self, namespace: str, key: str, payload: bytes) -> None:
        """Store ``payload`` under ``key`` with its sha256, atomically (temporary file, then rename)."""
        path = self._path(namespace, key)
        header = json.dumps({"key": key, "sha256": hashlib.sha256(payload).hexdigest()}).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_MAGIC + header + b"\n" + payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_or_compute(self, namespace: str, key: str, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key``, or ``compute()`` stored under it (a failed write is not an error)."""
        value = self.get(namespace, key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = compute()
        self.keep_bytes(namespace, key, _json_bytes(value))
        return value

    def keep_bytes(self, namespace: str, key: str, payload: bytes) -> None:
        """:meth:`put_bytes`, where a read-only or full cache folder costs speed, never the result (a warning)."""
        try:
            self.put_bytes(namespace, key, payload)
        except OSError as exc:
            self._warn(f"result cache: cannot write under {self.root} ({exc.strerror or exc}); results are not kept")

    def _warn(self, message: str) -> None:
        """A cache problem, once per message: it costs time, so the user should know, but never the run."""
        if message not in self.warned:
            self.warned.add(message)
            warnings.warn(message, CacheWarning, stacklevel=3)


def _json_bytes(value: Any) -> bytes:
    """How a JSON result is stored: sorted keys, so equal values give equal bytes."""
    return json.dumps(value, sort_keys=True).encode()


def default_cache() -> ContentCache | None:
    """The cache named by ``$CROSSLM_CACHE_DIR`` (``off`` = none), else the per-user default folder."""
    root = _cache_root()
    return None if root is None else ContentCache(root)


def site_cache(owner: str) -> ContentCache | None:
    """The private cache of one site (a client, or the auditor): ``<cache>/sites/<owner>/``.

    It holds what is derived from that owner's records (the frozen SLM's sentence embeddings)
    and sits on the machine where the owner runs, beside its data; nothing in it is ever sent.
    None when caching is off.

    Raises:
        ValueError: ``owner`` is not a plain name (letters, digits, ``-``, ``_``, ``.``).
    """
    if not owner or owner.startswith(".") or not all(c.isalnum() or c in "-_." for c in owner):
        raise ValueError(f"cache owner {owner!r} is not a plain name")
    root = _cache_root()
    return None if root is None else ContentCache(root / SITES / owner)


def _cache_root() -> Path | None:
    setting = os.environ.get(ENV_VAR, "").strip()
    if setting.lower() in ("off", "0", "none", "false"):
        return None
    if setting:
        return user_path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crosslm-secure" / "results"
