"""Checks of a config against this machine, before anything is written: ``crosslm config --check`` and
``crosslm run`` call :func:`check_paths`, so a missing data file or an unwritable ``output_dir`` is one
sentence now rather than a traceback after the models have loaded. ``crosslm config --check`` also
calls :func:`check_config`: the model folders (their files, never their weights) and the data, read
and split as the run reads and splits it (under a second on the embedded tasks).

They are not part of the config's validation: a finished run's config must still load (for
``crosslm report``, ``--resume``, audits) after its data file has moved.
"""

from __future__ import annotations

import os
from pathlib import Path

from crosslm_secure.config import Config
from crosslm_secure.data.loaders import load_labelled_data
from crosslm_secure.data.partition import partition_clients
from crosslm_secure.data.tables import existing_file
from crosslm_secure.errors import ConfigError, DataError
from crosslm_secure.models.folders import resolve_llm_files, resolve_slm_dir


def check_config(config: Config) -> None:
    """Everything a run would refuse that can be found without loading a model's weights.

    Raises:
        ConfigError: see :func:`check_paths`.
        ModelError: a model folder is missing or holds no ``config.json``, or a GGUF file is missing.
        DataError: the data does not load (a column, a label, a malformed file) or its split
            leaves a client too few records.
        PrivacyError: ``privacy.delta`` is too large for a client's record count.
    """
    check_paths(config)
    check_models(config)
    check_data(config)


def check_models(config: Config) -> None:
    """The LLM's and every client's SLM folder hold what loading them needs (no weight is read).

    Raises:
        ModelError: one sentence naming the config field and the folder.
    """
    resolve_llm_files(config.llm)
    resolve_slm_dir(config.slm.model)
    for client in config.client_ids():
        model = config.slm_for(client).model
        if model != config.slm.model:
            resolve_slm_dir(model, f"slm_overrides.{client}.model")


def check_data(config: Config) -> None:
    """The data loads and splits as the run's would, and DP can hold each client's delta.

    Raises:
        DataError: the loaders' or the partition's sentence.
        PrivacyError: ``privacy.delta`` is at least 1/n for a client with n records.
    """
    train, test = load_labelled_data(config.data, config.task, seed=config.run.seed)
    split = partition_clients(
        train, test, config.partition, config.client_ids(), seed=config.run.seed, label_names=config.task.labels
    )
    if config.privacy.dp:
        for client in split.clients:
            config.privacy.delta_for(len(client.train))


def check_paths(config: Config) -> None:
    """Refuse a config whose data or output folder this machine cannot use.

    Raises:
        ConfigError: ``data.path``/``data.test_path`` is missing, of the wrong kind, or over
            ``data.max_file_mb``; ``run.output_dir`` is a file or not writable.
    """
    data = config.data
    if data.source != "embedded":
        for field, path in (("data.path", data.path), ("data.test_path", data.test_path)):
            if path is not None:
                _check_data_path(field, path, data.source, data.max_file_mb)
    check_output_dir(config.run.output_dir)


def _check_data_path(field: str, path: Path, source: str, max_mb: float) -> None:
    try:
        existing_file(path, source, max_mb, field)
    except DataError as exc:
        raise ConfigError("config:" + str(exc).removeprefix("data:")) from None


def check_output_dir(output_dir: Path) -> None:
    """Refuse an ``output_dir`` that is a file or that this user cannot write (or create).

    Raises:
        ConfigError: one sentence naming the path and the fix.
    """
    existing = Path(output_dir)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"config: run.output_dir {output_dir} is under the file {existing}; choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"config: run.output_dir {output_dir} is not writable ({existing} is read-only for this user); "
            "choose a folder you can write"
        )
