"""Frozen sentence features of a head-only SLM: computed once per record, centred on public text.

With ``slm.trainable: head`` the encoder never changes, so DP-SGD sees each record only
through its sentence embedding. Embedding every record once and training the head on the
cached vectors runs the same mechanism (Poisson rate, clipping, noise, steps) at a fraction
of the cost of re-encoding texts on every step.

Embeddings also outlive a run. The public centre goes to the shared cache (it is computed from
public text only); a client's own embeddings go to its site cache (``cache.site_cache``), keyed
by each text's sha256 under a key of the encoder's weights and tokenizer, so a re-run or another
sweep cell on the same records embeds nothing again. An embedding depends only on its own text
(``sentence_embeddings`` pads each text to a length set by its own token count), so a warm cache gives a run bitwise
the same features as a cold one. A store that fails its hash check is discarded and rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from crosslm_secure.cache import ContentCache, content_key, default_cache, site_cache
from crosslm_secure.data.public_text import public_texts
from crosslm_secure.models.batches import EMBEDDING_BUCKET, sentence_embeddings
from crosslm_secure.models.pooling import MeanPoolingClassifier

EMBEDDING_SCHEME = f"pad-to-{EMBEDDING_BUCKET}"
"""How ``sentence_embeddings`` computes: part of every cache key, so a change of scheme never reuses old vectors."""


class FeatureHead(nn.Module):
    """The trainable part of a head-only SLM: dropout + linear classifier on its input features.

    ``classifier`` may be the SLM's own layer (training it trains the SLM) or a copy.
    """

    def __init__(self, classifier: nn.Linear, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))


def trains_on_features(model: nn.Module, trainable: str, lora_rank: int) -> bool:
    """True when only a linear head on mean-pooled embeddings trains (frozen encoder, no LoRA)."""
    return isinstance(model, MeanPoolingClassifier) and trainable == "head" and lora_rank == 0


def own_head(model: MeanPoolingClassifier) -> FeatureHead:
    """A head that shares ``model``'s classifier: training it trains the SLM."""
    return FeatureHead(model.classifier, float(model.dropout.p))


def set_public_centre(tokenizer: Any, model: MeanPoolingClassifier, *, max_length: int, batch_size: int) -> None:
    """Set ``model.feature_mean`` to the mean embedding of public text (no private record involved).

    The mean is kept in the shared cache under the encoder's fingerprint and ``max_length``.
    """

    def compute() -> list[float]:
        vectors = sentence_embeddings(tokenizer, model, public_texts(), max_length=max_length, batch_size=batch_size)
        return vectors.mean(dim=0).tolist()

    cache = default_cache()
    if cache is None:
        centre = compute()
    else:
        texts_hash = hashlib.sha256("\x00".join(public_texts()).encode()).hexdigest()
        fingerprint = encoder_fingerprint(tokenizer, model)
        key = content_key("public_centre", EMBEDDING_SCHEME, fingerprint, max_length, texts_hash)
        centre = cache.get_or_compute("public_centre", key, compute)
    with torch.no_grad():
        model.feature_mean.copy_(torch.tensor(centre, dtype=torch.float32).to(model.feature_mean.device))


def encoder_fingerprint(tokenizer: Any, model: MeanPoolingClassifier) -> str:
    """sha256 of the encoder's weights (names, dtypes, shapes, bytes) and of its tokenizer."""
    digest = hashlib.sha256()
    for name, tensor in model.encoder.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Truncation and padding are set by each call; the rest defines how text becomes ids.
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    else:
        state = tokenizer.get_vocab()
    digest.update(json.dumps(state, sort_keys=True).encode())
    return digest.hexdigest()


def text_hash(text: str) -> str:
    """The key of one text in a :class:`FeatureStore`."""
    return hashlib.sha256(text.encode()).hexdigest()


class FeatureStore:
    """One owner's sentence embeddings by text hash, kept across runs in its site cache.

    Args:
        cache: the owner's site cache (``cache.site_cache(owner)``); None keeps nothing.
        key: the encoder and settings the embeddings belong to (``content_key`` of the
            encoder fingerprint and ``max_length``).
    """

    NAMESPACE = "slm_features"

    def __init__(self, cache: ContentCache | None, key: str) -> None:
        self.cache = cache
        self.key = key
        self._vectors: dict[str, np.ndarray] | None = None
        self.reused = 0
        """How many embeddings were read from the store instead of computed."""

    def embeddings(
        self,
        tokenizer: Any,
        model: MeanPoolingClassifier,
        texts: Sequence[str],
        *,
        max_length: int,
        batch_size: int,
        progress: str | None = None,
    ) -> torch.Tensor:
        """``[len(texts), hidden]`` uncentred embeddings; only texts the store lacks are embedded.

        ``progress`` names a progress bar over the texts that are embedded (none when None).
        """
        stored = self._load()
        hashes = [text_hash(t) for t in texts]
        first: dict[str, int] = {}  # each text the store lacks, at its first position
        for i, h in enumerate(hashes):
            if h not in stored:
                first.setdefault(h, i)
        missing = list(first.values())
        if missing:
            fresh = sentence_embeddings(
                tokenizer,
                model,
                [texts[i] for i in missing],
                max_length=max_length,
                batch_size=batch_size,
                progress=progress,
            )
            for row, i in enumerate(missing):
                stored[hashes[i]] = fresh[row].numpy()
            self._save()
        self.reused += len(texts) - len(missing)
        if not texts:
            return torch.zeros(0, model.classifier.in_features)
        return torch.from_numpy(np.stack([stored[h] for h in hashes]))

    def _load(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = {}
            payload = self.cache.get_bytes(self.NAMESPACE, self.key) if self.cache is not None else None
            if payload is not None:
                try:
                    with np.load(io.BytesIO(payload), allow_pickle=False) as saved:
                        self._vectors = dict(zip(saved["hashes"].tolist(), saved["vectors"], strict=True))
                except (ValueError, KeyError, OSError):
                    self._vectors = {}  # hash-checked but unreadable: rebuild it
        return self._vectors

    def _save(self) -> None:
        if self.cache is None or not self._vectors:
            return
        buffer = io.BytesIO()
        hashes = np.array(list(self._vectors), dtype="U64")
        np.savez(buffer, hashes=hashes, vectors=np.stack(list(self._vectors.values())).astype(np.float32))
        self.cache.keep_bytes(self.NAMESPACE, self.key, buffer.getvalue())


def feature_store(owner: str, tokenizer: Any, model: MeanPoolingClassifier, *, max_length: int) -> FeatureStore:
    """The store of ``owner``'s embeddings under this encoder and ``max_length`` (in-memory when caching is off)."""
    key = content_key("slm_features", EMBEDDING_SCHEME, encoder_fingerprint(tokenizer, model), max_length)
    return FeatureStore(site_cache(owner), key)


class FeatureCache:
    """Embeddings of records by uid, computed once (the encoder is frozen). Lives with its client.

    Args:
        owner: the client whose records these are; its site cache keeps them across runs.
            None keeps them for this process only.
    """

    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner
        self._vectors: dict[str, torch.Tensor] = {}
        self._store: FeatureStore | None = None

    def features(
        self,
        tokenizer: Any,
        model: MeanPoolingClassifier,
        uids: Sequence[str],
        texts: Sequence[str],
        *,
        keep: bool = True,
        **encode: int,
    ) -> torch.Tensor:
        """``[len(uids), hidden]`` embeddings (uncentred), embedding only the uids not seen before.

        ``keep=False`` holds them for this process only (texts that change every run, such as a
        round's synthetic samples, would only grow the site cache).
        """
        missing = [i for i, uid in enumerate(uids) if uid not in self._vectors]
        if missing:
            texts_missing = [texts[i] for i in missing]
            if self.owner is None or not keep:
                fresh = sentence_embeddings(tokenizer, model, texts_missing, **encode)
            else:
                if self._store is None:
                    self._store = feature_store(self.owner, tokenizer, model, max_length=encode["max_length"])
                fresh = self._store.embeddings(tokenizer, model, texts_missing, **encode)
            for row, i in enumerate(missing):
                self._vectors[uids[i]] = fresh[row]
        if not uids:
            return torch.zeros(0, model.classifier.in_features)
        return torch.stack([self._vectors[uid] for uid in uids])

    @property
    def reused(self) -> int:
        """Embeddings read from the site cache instead of computed, in this process."""
        return self._store.reused if self._store is not None else 0
