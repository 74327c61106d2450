"""A deployment offered a job with ``privacy.noise_source: seeded`` refuses it in one sentence before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.config import Config, config_from_dict
from crosslm_secure.deploy import DeployError
from crosslm_secure.deploy.local import Deployment, deploy_local
from crosslm_secure.deploy.pki import SiteFiles
from crosslm_secure.deploy.site import run_site

SENTENCE = "deploy: privacy.noise_source is seeded, so anyone holding the job's config could replay the DP noise"


def _seeded(tmp_path: Path) -> Config:
    return config_from_dict({"run": {"output_dir": str(tmp_path / "runs")}, "privacy": {"noise_source": "seeded"}})


def _refusal(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


def test_every_deploy_command_refuses_a_seeded_job_and_starts_nothing(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f"run:\n  output_dir: {tmp_path / 'runs'}\nprivacy:\n  noise_source: seeded\n")
    workdir, state = tmp_path / "deployment", tmp_path / "state"
    commands = [
        ["deploy", "local", str(job), "--workdir", str(workdir)],
        ["deploy", "submit", str(job), "--pki", str(tmp_path / "no-pki")],
        ["deploy", "site", "--config", str(job), "--superlink", "127.0.0.1:9", "--site-dir", str(tmp_path / "site"),
         "--state-dir", str(state)],
    ]  # fmt: skip
    for args in commands:
        assert SENTENCE in _refusal(args), args
    assert not workdir.exists() and not state.exists() and not (tmp_path / "runs").exists()


def test_an_os_job_gets_past_the_check(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("privacy:\n  noise_source: os\n")
    refusal = _refusal(["deploy", "submit", str(job), "--pki", str(tmp_path / "no-pki")])
    assert "noise_source" not in refusal and "no-pki" in refusal  # it went on, to the missing PKI


def test_the_library_entry_points_refuse_too(tmp_path: Path) -> None:
    config = _seeded(tmp_path)
    with pytest.raises(DeployError, match="privacy.noise_source is seeded"):
        deploy_local(config, 3, tmp_path / "deployment")
    with pytest.raises(DeployError, match="privacy.noise_source is seeded"):
        Deployment(tmp_path / "admin", config)
    with pytest.raises(DeployError, match="privacy.noise_source is seeded"):
        run_site(config, SiteFiles(tmp_path / "site"), "127.0.0.1:9", state_dir=tmp_path / "state")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
