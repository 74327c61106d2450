"""LoRA adapters on the server LLM: add a fresh one, save it atomically, load it back for resume.

peft reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model, and
transformers answers with a ``FutureWarning`` into every run's output. :func:`quiet_peft` hides
that one message (and nothing else) around peft's wrapping calls.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import peft
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from crosslm_secure.config import LoraConfig
from crosslm_secure.errors import ModelError
from crosslm_secure.storage import atomic_dir

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Hide transformers' deprecation notice that peft's model wrapping triggers; other warnings pass."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def add_lora(model: torch.nn.Module, lora: LoraConfig, *, seed: int = 0) -> peft.PeftModel:
    """Wrap ``model`` with a fresh LoRA adapter; only the LoRA parameters stay trainable.

    The model must already be on its device: peft corrupts LoRA weights otherwise.

    Args:
        model: the loaded LLM (``LoadedLLM.model``, from ``models.llm.load_llm``).
        lora: rank, alpha, dropout and target modules.
        seed: seeds the adapter's random initialisation (the global RNG is left as it was).

    Raises:
        ModelError: the model is on the meta device or no module matches ``target_modules``.
    """
    if any(p.device.type == "meta" for p in model.parameters()):
        raise ModelError("LLM weights are not materialized (meta device); load the model before add_lora")
    config = peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )
    device = next(model.parameters()).device
    try:
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            with quiet_peft():
                wrapped = peft.get_peft_model(model, config)
    except ValueError as exc:
        raise ModelError(
            f"llm.lora.target_modules {list(lora.target_modules)} match no module of the LLM; "
            "name its attention projections (e.g. q_proj, v_proj)"
        ) from exc
    wrapped.eval()
    return wrapped


def save_lora(model: peft.PeftModel, folder: Path, *, extra_files: dict[str, str] | None = None) -> None:
    """Save the LoRA adapter of ``model`` to ``folder`` atomically (``storage.atomic_dir``).

    ``extra_files`` (name -> text) are written into the same folder before the rename, so the
    adapter and what belongs with it appear together or not at all.
    """
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)


def load_lora(model: torch.nn.Module, folder: Path) -> peft.PeftModel:
    """Load a saved LoRA adapter (for resume); the result is trainable and in eval mode.

    Args:
        model: a base model (gets wrapped) or a ``PeftModel`` (its adapter weights are replaced).
        folder: a folder written by ``save_lora``.

    Raises:
        ModelError: the folder or its adapter files are missing, corrupt, or do not fit the model.
    """
    folder = Path(folder)
    weights = folder / ADAPTER_WEIGHTS
    if not (folder / "adapter_config.json").is_file() or not weights.is_file():
        raise ModelError(
            f"LoRA adapter folder {folder} is missing or incomplete; resume from an earlier round or start a new run"
        )
    try:
        state = load_file(str(weights))
        if isinstance(model, peft.PeftModel):
            result = peft.set_peft_model_state_dict(model, state)
            missing = [k for k in result.missing_keys if "lora_" in k]
            if result.unexpected_keys or missing:
                raise ValueError(f"adapter keys do not match: {(result.unexpected_keys + missing)[:3]}")
            wrapped = model
        else:
            with quiet_peft():
                wrapped = peft.PeftModel.from_pretrained(model, folder, is_trainable=True)
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(
            f"LoRA adapter in {folder} is corrupt or does not fit this LLM ({type(exc).__name__}); "
            "resume from an earlier round or start a new run"
        ) from exc
    wrapped.eval()
    return wrapped
