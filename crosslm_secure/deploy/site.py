"""One client site in a deployment: a long-lived worker holding the site's ClientNode, and its SuperNode.

``crosslm deploy site`` runs both: the worker answers our protocol bytes on a private Unix
socket; ``flower-supernode`` (started as a child, TLS and node authentication on) connects
to the SuperLink and starts a ClientApp process per message that forwards to the worker.

With ``--site DIR/<site>`` the site is a party folder (``crosslm_secure/parties.py``): its own
keys, registry and records, its state under ``DIR/<site>/state/``. Without it (a simulation),
the site trains on its silo of the job's data, or with ``--data FILE`` on its own records.

The site's state is kept like an in-process run keeps it, under ``<state_dir>/<run_id>/clients/<site>/``:
the SLM checkpoint after every evaluated round and the privacy ledger. A new Flower run
(a fresh job, or the server resuming after a crash) rebuilds the node from that state, as
``crosslm run --resume`` does; messages of an older Flower run are refused from then on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from crosslm_secure.config import Config
from crosslm_secure.crypto.keys import ParticipantKeys, Registry, load_participant_keys
from crosslm_secure.data.records import ClientData
from crosslm_secure.deploy import DeployError, refuse_seeded_noise
from crosslm_secure.deploy.pki import SiteFiles
from crosslm_secure.deploy.wire import FAILED, OK, recv_frame, send_frame
from crosslm_secure.errors import CrossLMError
from crosslm_secure.parties import PartyFolder

if TYPE_CHECKING:
    import torch


class SiteWorker:
    """Holds one site's ClientNode between messages (the ClientApp processes are per message)."""

    def __init__(
        self,
        config: Config,
        files: SiteFiles,
        state_dir: Path,
        log: Callable[[str], None] = print,
        data: Path | None = None,
        *,
        party: PartyFolder | None = None,
        passphrase: str | None = None,
    ) -> None:
        """Check the site's keys and load its records.

        Args:
            config: the job every site agreed on.
            files: this site's credentials folder.
            state_dir: where the site keeps checkpoints and ledgers.
            log: where progress lines go.
            data: the site's own labelled records (``.csv``, ``.jsonl`` or a datasets folder),
                read with the job's columns and labels; the job's data file is then not read.
                Default: the site's silo of the job's data.
            party: the site's party folder (``crosslm_secure/parties.py``): its keys, registry
                and records are read from it, and ``state_dir`` is its ``state/``.
            passphrase: opens the party's keys when they were sealed with one.
        """
        self.config = config
        self.site = files.site
        self.state_dir = Path(state_dir)
        self.log = log
        self.data = None if data is None else Path(data)
        if party is not None:
            self.keys, self.registry, self.client, self.device = _open_party(config, party, passphrase, log)
        else:
            self.keys, self.registry, self.client, self.device = _open_silo(config, files, self.data, log)
        self._node = None
        self._session: tuple[int, str] | None = None
        self._retired: set[int] = set()
        self._lock = threading.Lock()

    def handle(self, flower_run: int, message: bytes) -> bytes:
        """Answer one request; (re)build the node when a new Flower run starts."""
        from crosslm_secure.protocol.envelope import verify
        from crosslm_secure.protocol.party import directory_of
        from crosslm_secure.runner import build_client_node
        from crosslm_secure.runstore import RunStore

        with self._lock:
            if flower_run in self._retired:
                raise DeployError(f"{self.site}: a message of the finished Flower run {flower_run} arrived late")
            envelope = verify(message, directory_of(self.registry))
            session = (flower_run, envelope.run_id)
            if self._session != session:
                if self._session is not None:
                    self._retired.add(self._session[0])
                root = self.state_dir / envelope.run_id
                resumed = RunStore(root).slm_dir(self.site).is_dir()
                self.log(f"{self.site}: {'resuming' if resumed else 'joining'} run {envelope.run_id}")
                self._node = build_client_node(
                    self.config,
                    root,
                    envelope.run_id,
                    self.client,
                    self.keys,
                    self.registry,
                    self.device,
                    resumed=resumed,
                )
                if self.data is not None:
                    from crosslm_secure.data.site import mark_own_data

                    mark_own_data(RunStore(root).client_dir(self.site), self.data, self.client)
                self._session = session
            return self._node.handle(message)


Opened = tuple[ParticipantKeys, Registry, ClientData, "torch.device"]


def _open_party(config: Config, party: PartyFolder, passphrase: str | None, log: Callable[[str], None]) -> Opened:
    """A site's keys, registry, records and device from its party folder."""
    from crosslm_secure.party_run import open_site
    from crosslm_secure.runner import start_job

    opened = open_site(party, config, passphrase)
    log(f"{party.name}: its own records: {len(opened.data.train)} train / {len(opened.data.test)} test")
    return opened.keys, opened.registry, opened.data, start_job(config)


def _open_silo(config: Config, files: SiteFiles, data: Path | None, log: Callable[[str], None]) -> Opened:
    """A simulated site's keys and registry from its PKI folder, and its silo of the job's data (or ``data``)."""
    site = files.site
    if site not in config.client_ids():
        raise DeployError(
            f"site {site!r} is not one of the job's clients {config.client_ids()}; "
            "use the credentials of a listed site or change partition.clients"
        )
    keys = load_participant_keys(files.keys)
    if keys.site != site:
        raise DeployError(f"{files.keys} holds the keys of {keys.site}, not {site}; point at its folder")
    registry = Registry.load(files.registry)
    if data is None:
        from crosslm_secure.runner import prepare_job

        log(f"{site}: loading its data silo")
        job = prepare_job(config, None)
        (client,) = [c for c in job.split.clients if c.client_id == site]
        return keys, registry, client, job.device
    from crosslm_secure.data.site import load_site_data
    from crosslm_secure.runner import start_job

    device = start_job(config)
    client = load_site_data(data, config.data, config.task, seed=config.run.seed, client_id=site)
    log(f"{site}: using its own data {data}: {len(client.train)} train / {len(client.test)} test records")
    return keys, registry, client, device


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        worker: SiteWorker = self.server.worker  # type: ignore[attr-defined]
        try:
            header, payload = recv_frame(self.request)
            if header.get("ping"):  # alive and serving; takes no lock, touches no state
                send_frame(self.request, {"status": OK}, b"")
                return
            reply = worker.handle(int(header["flower_run"]), payload)
        except CrossLMError as exc:
            send_frame(self.request, {"status": FAILED, "reason": str(exc)}, b"")
            return
        except Exception as exc:  # a crash is reported to Flower as an error reply, not hidden
            worker.log(f"{worker.site}: request failed: {type(exc).__name__}: {exc}")
            send_frame(self.request, {"status": FAILED, "reason": f"{type(exc).__name__}: {exc}"}, b"")
            return
        send_frame(self.request, {"status": OK}, reply)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve_worker(worker: SiteWorker) -> tuple[str, _Server]:
    """Listen on a fresh private Unix socket; return its path and the running server."""
    folder = tempfile.mkdtemp(prefix="crosslm-site-")
    os.chmod(folder, 0o700)
    path = os.path.join(folder, "worker.sock")
    server = _Server(path, _Handler)
    os.chmod(path, 0o600)
    server.worker = worker  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, name="site-worker", daemon=True).start()
    return path, server


def supernode_command(
    files: SiteFiles, superlink: str, socket_path: str, runtime_port: int, *, max_wait: float | None = None
) -> list[str]:
    """The ``flower-supernode`` command line of a site (TLS and node authentication on).

    It runs Flower's SuperNode through ``crosslm_secure.deploy.supernode``, which shortens its
    idle wait between pulls and its heartbeat interval; nothing else changes.
    """
    command = [
        sys.executable,
        "-m",
        "crosslm_secure.deploy.supernode",
        "--superlink",
        superlink,
        "--node-config",
        f'site="{files.site}" socket="{socket_path}"',
        "--port",
        str(runtime_port),
        "--root-certificates",
        str(files.ca),
        "--auth-supernode-private-key",
        str(files.auth_key),
    ]
    if max_wait is not None:
        command += ["--max-wait-time", str(max_wait)]
    return command


ACTIVATION_RETRY = 5.0
"""Seconds between tries to activate a SuperNode the SuperLink still lists online (within ``max_wait``)."""


def run_site(
    config: Config,
    files: SiteFiles,
    superlink: str,
    *,
    state_dir: Path,
    max_wait: float | None = 120.0,
    log: Callable[[str], None] = print,
    data: Path | None = None,
    party: PartyFolder | None = None,
    passphrase: str | None = None,
) -> int:
    """Run a site until its SuperNode exits (Ctrl-C or SIGTERM stops both); return 0 on a clean stop.

    ``data`` is the site's own labelled records, ``party`` its party folder (see ``SiteWorker``);
    default its silo of the job's data.

    Raises:
        DeployError: the SuperNode could not join (wrong certificate, unregistered key, SuperLink unreachable).
            A SuperNode the SuperLink refuses to activate is tried again every ``ACTIVATION_RETRY``
            seconds until ``max_wait`` passes: after a crash, the site's earlier SuperNode counts as
            online for about 20 seconds (``crosslm_secure.deploy.supernode.HEARTBEAT_INTERVAL``).
    """
    refuse_seeded_noise(config)
    worker = SiteWorker(config, files, state_dir, log, data, party=party, passphrase=passphrase)
    path, server = serve_worker(worker)
    home = Path(tempfile.mkdtemp(prefix="crosslm-flwr-"))
    env = flower_env(FLWR_HOME=str(home), FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.1")
    command = supernode_command(files, superlink, path, free_port(), max_wait=max_wait)
    log_path = Path(state_dir) / f"supernode-{files.site}-{os.getpid()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if max_wait is None else time.monotonic() + max_wait
    stopping = threading.Event()
    child: subprocess.Popen | None = None

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        if child is not None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code, tail = 0, ""
    while not stopping.is_set():
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as sink:
            child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
            if stopping.is_set():  # a stop that came while it was starting
                child.terminate()
            log(f"{files.site}: SuperNode started (pid {child.pid}), connecting to {superlink}; log {log_path}")
            code = child.wait()
        tail = log_path.read_bytes()[offset:].decode(errors="replace")
        retry = deadline is None or time.monotonic() + ACTIVATION_RETRY < deadline
        if stopping.is_set() or code == 0 or "failed to activate supernode" not in tail.lower() or not retry:
            break
        # After a crash the SuperLink lists the site's earlier SuperNode as online until two
        # heartbeat intervals (20 s) pass, and refuses to activate the same key again until then.
        log(f"{files.site}: the SuperLink did not activate this SuperNode yet; retrying in {ACTIVATION_RETRY:.0f}s")
        stopping.wait(ACTIVATION_RETRY)
    server.shutdown()
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    if stopping.is_set():
        return 0
    raise supernode_failure(files.site, superlink, tail[-4000:], code)


def supernode_failure(site: str, superlink: str, log_tail: str, code: int) -> DeployError:
    """Turn a SuperNode's exit into one sentence naming the problem and the fix."""
    text = log_tail.lower()
    if "certificate verify failed" in text or "ssl" in text and "certificate" in text:
        return DeployError(
            f"{site}: the SuperLink's TLS certificate does not verify against this site's ca.pem; "
            "copy the ca.pem of the PKI that issued the SuperLink certificate into the site folder"
        )
    if (
        "failed to activate supernode" in text
        or "unregistered" in text
        or "not registered" in text
        or "unauthenticated" in text
        or "permission" in text
    ):
        return DeployError(
            f"{site}: the SuperLink refused this SuperNode's authentication key; register it on the server with "
            f"`crosslm deploy register --pki <pki> --superlink {superlink} --site {site}` (if it is registered, "
            "an earlier instance of this site still counts as online: start it again with a longer --max-wait)"
        )
    if "connection refused" in text or "unavailable" in text or "failed to establish" in text:
        return DeployError(
            f"{site}: the SuperLink at {superlink} is unreachable; start it (`crosslm deploy superlink`) "
            "or check the address and firewall"
        )
    return DeployError(f"{site}: the SuperNode exited with code {code}; see the end of its log:\n{log_tail[-800:]}")


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flower_bin(name: str) -> str:
    """The Flower executable ``name`` next to this Python, else ``name`` (found on PATH)."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def flower_env(**extra: str) -> dict[str, str]:
    """This process's environment plus ``extra``, with this Python's bin folder first on PATH.

    The SuperLink and SuperNode start their helpers (flower-superexec, flwr-serverapp,
    flwr-clientapp) by name: they must find the ones installed next to this Python.
    """
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
