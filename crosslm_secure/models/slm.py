"""Load a client's small LM (SLM): a sequence classifier from a local folder.

The SLM stays in fp32 on every device: it is trained every round (pure-bf16 AdamW drops
small updates and Opacus' per-sample gradients expect fp32), and at ~23M parameters
fp32 costs little even on a GPU.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from crosslm_secure.config import SLMConfig
from crosslm_secure.errors import ModelError
from crosslm_secure.models.folders import resolve_slm_dir
from crosslm_secure.models.pooling import MeanPoolingClassifier, load_head


def load_slm(
    cfg: SLMConfig, num_labels: int, device: torch.device, *, seed: int | None = None
) -> tuple[PreTrainedTokenizerBase, torch.nn.Module]:
    """Load the tokenizer and a fresh ``num_labels``-way classifier for a client.

    The encoder weights come from the folder; a classification head whose size does not
    match ``num_labels`` (or is absent) is newly initialized. Nothing is downloaded.

    Args:
        cfg: the client's SLM settings (``cfg.model`` is ``embedded`` or a folder).
        num_labels: classes of the task.
        device: where the model goes (kept in fp32).
        seed: seeds the new head's initialization; None uses the global torch RNG.

    Returns:
        ``(tokenizer, model)`` with the model on ``device`` in eval mode; trainers call
        ``model.train()`` themselves.

    Raises:
        ModelError: the folder is missing, unreadable, or not a sequence classifier.
    """
    if num_labels < 2:
        raise ModelError(f"an SLM needs at least 2 labels (got {num_labels})")
    folder = resolve_slm_dir(cfg.model)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            with _seeded(seed):
                if cfg.pooling == "mean":
                    encoder = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
                    model = MeanPoolingClassifier(encoder, num_labels)
                    load_head(model, folder)
                else:
                    model = AutoModelForSequenceClassification.from_pretrained(
                        folder,
                        num_labels=num_labels,
                        local_files_only=True,
                        ignore_mismatched_sizes=True,
                        dtype=torch.float32,
                    )
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load an SLM classifier from {folder} ({reason}); check slm.model") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"the tokenizer in {folder} has neither a pad nor an eos token; add a pad token")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.trainable == "head":
        for parameter in _encoder_of(model).parameters():
            parameter.requires_grad_(False)
    model.to(device)
    model.eval()
    return tokenizer, model


def _encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The pretrained body under the classification head."""
    if isinstance(model, MeanPoolingClassifier):
        return model.encoder
    return model.base_model


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (e.g. the new-head report on load,
    the per-checkpoint write bar), restoring the previous settings afterwards."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
