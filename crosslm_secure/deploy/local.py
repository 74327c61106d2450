"""Real Flower processes on one machine: a SuperLink, SuperNodes (one per site), and ``flwr run``.

:class:`Deployment` is what ``crosslm deploy local`` and the deployment tests drive: every
process is a separate OS process (own session, so a whole site can be killed at once), TLS
and SuperNode authentication are on, and everything is stopped on exit, even after a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
import yaml

from crosslm_secure.config import Config, config_to_dict
from crosslm_secure.deploy import DeployError, refuse_seeded_noise
from crosslm_secure.deploy.pki import PKI, SiteFiles, SitesPKI, init_pki
from crosslm_secure.deploy.site import flower_bin, flower_env, free_port, wait_until
from crosslm_secure.metrics import round_line
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_text

CONNECTION = "crosslm"
APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "crosslm-flower"
version = "1.0.0"
description = "CrossLM over Flower: the coordinator and client handlers of crosslm-secure"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "crosslm"

[tool.flwr.app.components]
serverapp = "crosslm_secure.deploy.apps:server_app"
clientapp = "crosslm_secure.deploy.apps:client_app"

[tool.flwr.app.config]
job = ""
resume = ""
server_dir = ""
announce = ""
sites = ""
timeout = 600.0
join_wait = 120.0
"""


def write_app(folder: Path) -> Path:
    """The Flower app project (pyproject only; the code is the installed crosslm_secure)."""
    atomic_write_text(Path(folder) / "pyproject.toml", APP_PYPROJECT)
    return Path(folder)


def superlink_command(pki: PKI, port: int, host: str = "127.0.0.1") -> list[str]:
    """The ``flower-superlink`` command line: TLS from ``pki``'s superlink/ part, SuperNode auth on."""
    return [
        flower_bin("flower-superlink"),
        "--host", host, "--port", str(port),
        "--ssl-ca-certfile", str(pki.superlink_ca),
        "--ssl-certfile", str(pki.superlink_cert),
        "--ssl-keyfile", str(pki.superlink_key),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
    ]  # fmt: skip


@dataclass
class Deployment:
    """A loopback deployment under ``workdir`` (PKI, Flower home, logs, app project)."""

    workdir: Path
    config: Config | None
    log: Callable[[str], None] = print
    port: int = 0
    host: str = "127.0.0.1"
    pki: PKI | SitesPKI | None = None
    sites_root: Path | None = None
    """A folder of party folders: sites start from their own folder, the server from ``server/``."""
    superlink: subprocess.Popen | None = None
    sites: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.config is not None:
            refuse_seeded_noise(self.config)
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home = self.workdir / "flwr-home"
        self.job_file = self.workdir / "job.yaml"
        if self.config is not None:
            atomic_write_text(self.job_file, yaml.safe_dump(config_to_dict(self.config), sort_keys=False))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def attach(self, pki: PKI, superlink: str) -> None:
        """Talk to a SuperLink started elsewhere (``crosslm deploy superlink``) with this PKI's CA.

        Raises:
            DeployError: ``superlink`` is not ``host:port``.
        """
        host, _, port = superlink.rpartition(":")
        if not host or not port.isdigit():
            raise DeployError(f"--superlink must be host:port (got {superlink!r}), e.g. superlink.example.org:9093")
        self.pki, self.host, self.port = pki, host, int(port)
        self._write_flwr_config()

    def env(self) -> dict[str, str]:
        return flower_env(FLWR_HOME=str(self.home), FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.1", PYTHONUNBUFFERED="1")

    # -- setup ----------------------------------------------------------------------------

    def init_pki(self, sites: list[str]) -> PKI:
        self.pki = init_pki(self.workdir / "pki", sites, ["127.0.0.1", "localhost"], force=True)
        return self.pki

    def start_superlink(self) -> None:
        """Start ``flower-superlink`` (TLS, SuperNode auth) on a free port and wait until it accepts connections.

        Raises:
            DeployError: the port is taken or the SuperLink exited.
        """
        assert self.pki is not None
        self.port = free_port()
        if _port_open(self.port):
            raise DeployError(f"port {self.port} is already in use; stop what listens there or pick another --port")
        self.superlink = self._spawn(superlink_command(self.pki, self.port, self.host), "superlink")
        self._write_flwr_config()
        if not wait_until(lambda: _port_open(self.port) or self.superlink.poll() is not None, 60):
            raise DeployError(f"the SuperLink did not open port {self.port} within 60 s; see {self._log('superlink')}")
        if self.superlink.poll() is not None:
            tail = self._log("superlink").read_text(errors="replace")[-1500:]
            if "address already in use" in tail.lower():
                raise DeployError(f"port {self.port} is already in use; stop what listens there or pick another --port")
            raise DeployError(f"the SuperLink exited at start; see {self._log('superlink')}:\n{tail}")
        self.log(f"SuperLink on {self.address} (TLS, SuperNode auth on)")

    def register(self, site: str) -> None:
        """Register a site's SuperNode authentication key with the SuperLink (``flwr supernode register``)."""
        assert self.pki is not None
        key = self.pki.auth_pub(site)
        done = self.flwr(["supernode", "register", str(key), CONNECTION, "--name", site])
        if done.returncode != 0:
            raise DeployError(f"registering {site}'s SuperNode key failed; flwr said: {done.stdout[-600:]}")

    def start_site(
        self, site: str, files: SiteFiles | None = None, *, max_wait: float = 120.0, data: Path | None = None
    ) -> subprocess.Popen:
        """Start ``crosslm deploy site`` for one site as its own process group (``data``: its ``--data`` file)."""
        assert self.pki is not None
        files = files or self.pki.site(site)
        command = [sys.executable, "-m", "crosslm_secure.deploy.cli", "site"]
        command += ["--config", str(self.job_file), "--superlink", self.address, "--max-wait", str(max_wait)]
        if self.sites_root is not None:
            command += ["--site", str(files.folder)]
        else:
            command += ["--site-dir", str(files.folder), "--state-dir", str(Path(self.config.run.output_dir).resolve())]
        if data is not None:
            command += ["--data", str(Path(data).resolve())]
        process = self._spawn(command, f"site-{site}")
        self.sites[site] = process
        return process

    def connected_nodes(self) -> int:
        """How many SuperNodes the SuperLink lists as online."""
        done = self.flwr(["supernode", "list", CONNECTION, "--format", "json"])
        try:
            nodes = json.loads(done.stdout).get("nodes", [])
        except json.JSONDecodeError:
            return 0
        return sum(1 for n in nodes if str(n.get("status", "")).lower() == "online")

    # -- runs -----------------------------------------------------------------------------

    def submit(
        self,
        *,
        resume: Path | None = None,
        timeout: float = 600.0,
        join_wait: float = 120.0,
        config: Config | None = None,
    ) -> str:
        """``flwr run`` the job (or its resumption, or ``config`` instead); return the Flower run id."""
        assert self.pki is not None and self.config is not None
        refuse_seeded_noise(config or self.config)
        app = write_app(self.workdir / "app")
        announce = self.workdir / f"announce-{time.time_ns()}.json"
        overrides = {
            "job": json.dumps(config_to_dict(config or self.config), default=str),
            "resume": str(resume or ""),
            "server_dir": str(self.pki.server.folder),
            "sites": "true" if self.sites_root is not None else "",
            "announce": str(announce),
            "timeout": float(timeout),
            "join_wait": float(join_wait),
        }
        run_config = self.workdir / "run-config.toml"
        atomic_write_text(run_config, tomli_w.dumps(overrides))
        done = self.flwr(["run", str(app), CONNECTION, "--run-config", str(run_config), "--format", "json"])
        try:
            run_id = json.loads(done.stdout)["run-id"]
        except (json.JSONDecodeError, KeyError, TypeError):
            run_id = None
        if not run_id:
            raise DeployError(f"`flwr run` did not start the job; flwr said: {done.stdout[-800:]}")
        self.announce = announce
        self.log(f"Flower run {run_id} started")
        return str(run_id)

    def run_dir(self, timeout: float = 300.0) -> Path:
        """The run folder the ServerApp created (it announces it once it starts)."""
        if not wait_until(lambda: self.announce.exists(), timeout):
            raise DeployError(f"the ServerApp did not start within {timeout:.0f}s; see `flwr log` / {self.workdir}")
        return Path(json.loads(self.announce.read_text())["run_dir"])

    def status(self, run_id: str) -> str:
        done = self.flwr(["list", "--run-id", run_id, CONNECTION, "--format", "json"])
        try:
            return str(json.loads(done.stdout)["runs"][0]["status"])
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            return "unknown"

    def wait(self, run_id: str, timeout: float, on_round: Callable[[dict], None] | None = None) -> str:
        """Wait for the Flower run to finish, reporting each finished round; return its final status.

        Raises:
            DeployError: it did not finish in ``timeout`` seconds.
        """
        run_dir = self.run_dir()
        store = RunStore(run_dir)
        seen = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.status(run_id)  # before reading the rounds, so a finished run's last round is seen
            rows = store.rounds()
            for row in rows[seen:]:
                if on_round is not None:
                    on_round(row)
            seen = max(seen, len(rows))
            if state.startswith("finished"):
                return state
            time.sleep(2.0)
        raise DeployError(f"run {run_id} did not finish within {timeout:.0f}s; see {run_dir} and {self.workdir}")

    def serverapp_pid(self) -> int:
        """The process id of the ServerApp running the last submitted job (it announces it at start).

        Read from the announce file rather than the process table: the ServerApp is a grandchild
        of the SuperLink, and a process listing is not available on every machine.
        """
        self.run_dir()
        return int(json.loads(self.announce.read_text())["pid"])

    # -- teardown -------------------------------------------------------------------------

    def kill_site(self, site: str) -> None:
        """SIGKILL a whole site (worker, SuperNode, its SuperExec and ClientApps)."""
        process = self.sites.pop(site)
        _kill_group(process, signal.SIGKILL)

    def stop(self) -> None:
        for site in list(self.sites):
            _kill_group(self.sites.pop(site), signal.SIGTERM)
        if self.superlink is not None:
            _kill_group(self.superlink, signal.SIGTERM)
            self.superlink = None

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------------------

    def flwr(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [flower_bin("flwr"), *args],
            capture_output=True,
            text=True,
            env={**self.env(), "COLUMNS": "200"},
            timeout=120,
        )

    def _write_flwr_config(self) -> None:
        assert self.pki is not None
        connection = {"address": self.address, "root-certificates": str(self.pki.ca)}
        config = {"superlink": {"default": CONNECTION, CONNECTION: connection}}
        atomic_write_text(self.home / "config.toml", tomli_w.dumps(config))

    def _log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen:
        path = self._log(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as sink:
            return subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
            )


def deploy_local(
    config: Config,
    clients: int,
    workdir: Path,
    *,
    resume: Path | None = None,
    log: Callable[[str], None] = print,
    timeout: float = 600.0,
    sites: Path | None = None,
) -> Path:
    """``crosslm deploy local``: PKI, SuperLink, one SuperNode per client, one job, then stop everything.

    With ``sites`` (a folder of party folders) the coordinator's own TLS and enrolled SuperNode
    keys are used, each site starts from its own folder with its own keys and records, and no
    PKI is made; else a loopback PKI is made for a simulation.

    Returns the run folder (laid out as an in-process run's).
    """
    if config.partition.clients != clients:
        config = config.model_copy(update={"partition": config.partition.model_copy(update={"clients": clients})})
    with Deployment(workdir, config, log=log, sites_root=sites) as deployment:
        if sites is None:
            deployment.init_pki(config.client_ids())
        else:
            deployment.pki = SitesPKI.open(sites)
        deployment.start_superlink()
        for site in config.client_ids():
            deployment.register(site)
            deployment.start_site(site)
        run_id = deployment.submit(resume=resume, timeout=timeout)
        return follow(deployment, run_id, log)


def follow(deployment: Deployment, run_id: str, log: Callable[[str], None], timeout: float = 24 * 3600.0) -> Path:
    """Report each finished round of Flower run ``run_id`` until it ends; return its run folder.

    Raises:
        DeployError: the run ended other than completed, or did not end within ``timeout``.
    """
    run_dir = deployment.run_dir()
    log(f"run folder: {run_dir}")

    status = deployment.wait(run_id, timeout, lambda row: log(round_line(row).strip()))
    if status != "finished:completed":
        raise DeployError(
            f"the Flower run ended as {status}; see `flwr log {run_id}` and the logs in {deployment.workdir}/logs"
        )
    return run_dir


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
