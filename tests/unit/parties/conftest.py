"""Fixtures of the pilot tests: a folder holding a tiny job's data and models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.parties.pilot_job import tiny_job


@pytest.fixture(scope="package")
def job_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pilot")
    tiny_job(root)
    return root
