"""Fixtures shared across test folders."""

from __future__ import annotations

import pytest
import torch

from crosslm_secure.config import LLMConfig
from crosslm_secure.models.llm import LoadedLLM, load_llm
from tests.tiny_models import tiny_llm_dir


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker gets one torch thread: two workers with a thread per core each
    oversubscribe the cores (side by side, torch jobs ran 8.6x slower with default threads)."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"  # and every process a test starts
        torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_result_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or fill the user's result cache (crosslm_secure.cache)."""
    import os

    os.environ.setdefault("CROSSLM_CACHE_DIR", str(tmp_path_factory.mktemp("result-cache")))


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> LoadedLLM:
    """A tiny random causal LM through the real loader; module-scoped, so tests must not train it."""
    return load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path_factory.mktemp("llm")))), torch.device("cpu"))
