"""Where a model's files are, checked without loading a weight (no torch here).

The loaders (:mod:`crosslm_secure.models.slm`, :mod:`crosslm_secure.models.llm`) and
``crosslm config --check`` (:mod:`crosslm_secure.preflight`) ask here, so a folder that is
missing or holds no ``config.json`` is refused in the same sentence before a run and in it.
"""

from __future__ import annotations

from pathlib import Path

from crosslm_secure.config import LLMConfig
from crosslm_secure.embedded import LLM_GGUF, LLM_PACKAGE, SLM_PACKAGE, SLM_SUBDIR, embedded_file
from crosslm_secure.errors import ModelError
from crosslm_secure.storage import user_path


def resolve_slm_dir(model: str, field: str = "slm.model") -> Path:
    """The folder of an SLM spec: ``embedded`` or a local Hugging Face model folder.

    Args:
        model: ``embedded`` or a folder path.
        field: the config field that names it, for the sentence (``slm_overrides.client-2.model``).

    Raises:
        ModelError: the folder is missing or has no ``config.json`` (or the embedded package is not installed).
    """
    if model == "embedded":
        return embedded_file(SLM_PACKAGE, SLM_SUBDIR)
    folder = user_path(model)
    if not folder.is_dir():
        raise ModelError(f"{field} folder {folder} not found; give a local Hugging Face model folder or 'embedded'")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{field} folder {folder} has no config.json; save the model with save_pretrained()")
    return folder


def resolve_llm_files(cfg: LLMConfig) -> tuple[Path, Path | None]:
    """The LLM's folder and its GGUF file, if it is one (the embedded LLM is a GGUF file, its folder ``None``).

    Returns:
        ``(folder, gguf)``: a Hugging Face folder with ``gguf`` None, or a GGUF file and the folder holding it.

    Raises:
        ModelError: the folder, the GGUF file or the folder's ``config.json`` is missing.
    """
    if cfg.model == "embedded":
        gguf = embedded_file(LLM_PACKAGE, LLM_GGUF)
        return gguf.parent, gguf
    folder = user_path(cfg.model)
    if not folder.is_dir():
        raise ModelError(
            f"LLM folder {folder} not found; set llm.model to a local Hugging Face model folder or to 'embedded'"
        )
    if cfg.gguf_file:
        gguf = folder / cfg.gguf_file
        if not gguf.is_file():
            raise ModelError(f"LLM GGUF file {gguf} not found; fix llm.gguf_file or remove it")
        return folder, gguf
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"LLM folder {folder} has no config.json; point llm.model at a Hugging Face "
            "causal-LM folder (or set llm.gguf_file for a GGUF file in it)"
        )
    return folder, None
