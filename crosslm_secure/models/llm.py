"""Resolve and load the server LLM (embedded SmolLM2 or a local folder); its LoRA adapter is ``models.lora``.

The embedded default ships as a GGUF file. Dequantizing it takes ~30 s, so it is converted
once into a safetensors cache (written atomically, with a manifest holding the sha256 of
the weights, so a truncated or corrupt cache is detected and rebuilt).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peft
import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from crosslm_secure.config import LLMConfig
from crosslm_secure.errors import ModelError
from crosslm_secure.models.device import model_dtype
from crosslm_secure.models.folders import resolve_llm_files
from crosslm_secure.storage import atomic_dir

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
MANIFEST = "crosslm-manifest.json"
WEIGHTS = "model.safetensors"
_MANIFEST_FORMAT = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass
class LoadedLLM:
    """The server LLM, ready to generate, tune and evaluate."""

    tokenizer: PreTrainedTokenizerBase
    """Left padding, pad token set."""
    model: torch.nn.Module
    """On its device, in eval mode (a ``peft.PeftModel`` once LoRA is added)."""
    source: str
    """Human description of where the weights came from."""
    fingerprint: str
    """sha256 (hex) of the weight files, for audit reports."""

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.model.parameters()).device


def load_llm(cfg: LLMConfig, device: torch.device) -> LoadedLLM:
    """Load the server LLM named by ``cfg`` onto ``device`` (never touches a model hub).

    Args:
        cfg: ``model`` is ``embedded`` or a local Hugging Face causal-LM folder;
            ``gguf_file`` names a GGUF file inside that folder, if any.
        device: where the model runs; the dtype follows ``model_dtype(device)``.

    Returns:
        The tokenizer (left padding), the model in eval mode, its source and fingerprint.

    Raises:
        ModelError: the folder or file is missing or does not hold a loadable causal LM.
    """
    folder, gguf = resolve_llm_files(cfg)
    source = str(folder)
    if gguf is not None:
        root = cfg.cache_dir or default_cache_root()
        embedded = cfg.model == "embedded"
        folder = ensure_gguf_cache(gguf, root / (EMBEDDED_NAME if embedded else _cache_name(gguf)))
        source = f"embedded {EMBEDDED_NAME} ({gguf.name}, cache {folder})" if embedded else f"{gguf} (cache {folder})"
    tokenizer, model = _load_folder(folder, device)
    return LoadedLLM(tokenizer=tokenizer, model=model, source=source, fingerprint=_fingerprint(folder))


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/crosslm-secure/models`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crosslm-secure" / "models"


def ensure_gguf_cache(gguf: Path, folder: Path) -> Path:
    """Return a verified safetensors copy of ``gguf`` in ``folder``, converting it if needed.

    Raises:
        ModelError: the GGUF file cannot be read as a causal LM.
    """
    return ensure_model_cache(folder, source=gguf, convert=lambda: _read_gguf(gguf))


def ensure_model_cache(
    folder: Path,
    *,
    source: Path,
    convert: Callable[[], tuple[torch.nn.Module, PreTrainedTokenizerBase]],
) -> Path:
    """Return ``folder`` once it holds a verified cache of ``source``; call ``convert`` if not.

    A cache whose manifest is missing, names another source, or whose weights do not match
    the recorded sha256 (truncated, corrupt) is rebuilt from ``convert()``.
    """
    if not cache_is_valid(folder, source=source):
        model, tokenizer = convert()
        write_model_cache(model, tokenizer, folder, source=source)
    return folder


def _read_gguf(gguf: Path) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(
            f"GGUF file {gguf} could not be loaded as a causal LM ({type(exc).__name__}); "
            "check the file or reinstall it"
        ) from exc
    return model, tokenizer


def write_model_cache(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path, *, source: Path
) -> None:
    """Save ``model`` and ``tokenizer`` as a safetensors folder with a manifest, atomically.

    A GGUF-loaded model refuses ``save_pretrained``; it is rebuilt from its config (without
    the quantization config) and its state dict first.
    """
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
        state = model.state_dict()
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(state)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = {
            "format": _MANIFEST_FORMAT,
            "source": str(source.resolve()),
            "source_size": source.stat().st_size,
            "weights_sha256": _sha256_file(tmp / WEIGHTS),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))


def cache_is_valid(folder: Path, *, source: Path) -> bool:
    """Whether ``folder`` is a complete cache of ``source`` whose weights match the manifest."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return (
            manifest.get("format") == _MANIFEST_FORMAT
            and manifest.get("source") == str(source.resolve())
            and manifest.get("source_size") == source.stat().st_size
            and (folder / "config.json").is_file()
            and manifest.get("weights_sha256") == _sha256_file(folder / WEIGHTS)
        )
    except (OSError, ValueError, AttributeError):
        return False


def render_prompt(tokenizer: PreTrainedTokenizerBase, message: str) -> str:
    """The text the model sees for a user ``message``: the chat template when there is one.

    Generation, tuning and evaluation all build prompts here, so they always agree.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    return message


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a rendered prompt (chat templates carry their own special tokens)."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(prompt, add_special_tokens=not chat)["input_ids"]


def left_pad(
    sequences: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(input_ids, attention_mask, position_ids)`` tensors."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def follow_prefix(
    cache: Any, shared: int, mask: torch.Tensor, positions: torch.Tensor
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Make a batch of left-padded suffixes follow a shared prefix whose one-row key/value
    ``cache`` covers ``shared`` tokens: the cache is repeated for every row (in place, autograd
    flows through it), the mask gains the prefix's columns and the positions continue after it.
    """
    rows = mask.shape[0]
    cache.batch_repeat_interleave(rows)
    ones = torch.ones(rows, shared, dtype=mask.dtype, device=mask.device)
    return cache, torch.cat([ones, mask], dim=1), positions + shared


def tail_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    keep: int,
    past_key_values: Any = None,
) -> torch.Tensor:
    """Logits of the last ``keep`` positions only, shape ``(batch, keep, vocab)``.

    With left padding the answers sit at the end, so skipping the vocabulary projection of
    the other positions saves most of the compute and memory of a forward pass.
    ``past_key_values`` (a cache of a shared prefix) makes ``attention_mask`` cover the
    prefix and the new tokens, and ``position_ids`` continue after the prefix.
    """
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
    if past_key_values is not None:
        kwargs["past_key_values"] = past_key_values
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    return model(**kwargs).logits[:, -keep:, :]


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    base = model.get_base_model() if isinstance(model, peft.PeftModel) else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _load_folder(folder: Path, device: torch.device) -> tuple[PreTrainedTokenizerBase, Any]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=model_dtype(device))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ModelError(
            f"LLM folder {folder} does not hold a loadable causal LM and tokenizer "
            f"({type(exc).__name__}); point llm.model at a Hugging Face causal-LM folder"
        ) from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"LLM tokenizer in {folder} has neither a pad nor an eos token; add one")
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return tokenizer, model


def _cache_name(gguf: Path) -> str:
    tag = hashlib.sha256(str(gguf.resolve()).encode()).hexdigest()[:12]
    return f"{gguf.stem}-{tag}"


def _fingerprint(folder: Path) -> str:
    manifest = folder / MANIFEST
    if manifest.is_file():
        recorded = json.loads(manifest.read_text()).get("weights_sha256")
        if isinstance(recorded, str):
            return recorded
    return _sha256_files(sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES))


def _sha256_files(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        digest.update(bytes.fromhex(_sha256_file(path)))
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
