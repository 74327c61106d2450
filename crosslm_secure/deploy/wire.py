"""The local hop between a per-message ClientApp process and its site's long-lived worker.

Flower starts a fresh ``flwr-clientapp`` process for every message (measured: a new pid per
message), so the site's node (trained SLM, installed CKKS secret key, replay state) lives in
one worker process per site. The ClientApp forwards our bytes over a Unix socket that only the
site's user can open (folder 0700, socket 0600). Light imports only: this runs per message.
"""

from __future__ import annotations

import json
import socket
import struct

_HEADER = struct.Struct(">IQ")
OK, FAILED = 0, 1


def send_frame(sock: socket.socket, header: dict, payload: bytes) -> None:
    head = json.dumps(header).encode()
    sock.sendall(_HEADER.pack(len(head), len(payload)) + head + payload)


def recv_frame(sock: socket.socket) -> tuple[dict, bytes]:
    head_len, payload_len = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    header = json.loads(_recv_exactly(sock, head_len))
    return header, _recv_exactly(sock, payload_len)


def ask_worker(path: str, flower_run: int, message: bytes) -> bytes:
    """Hand one request to the site worker and return its reply bytes.

    Raises:
        RuntimeError: the worker is not running or refused the request (Flower turns this into an error reply).
    """
    return _exchange(path, {"flower_run": flower_run}, message)


def ping_worker(path: str) -> None:
    """Check the site worker is running and serving (the site-name query asks it before answering).

    Raises:
        RuntimeError: it is not running, or does not answer.
    """
    _exchange(path, {"ping": True}, b"")


def _exchange(path: str, request: dict, message: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError as exc:
            raise RuntimeError(f"site worker at {path} is not running ({exc}); restart `crosslm deploy site`") from None
        send_frame(sock, request, message)
        header, payload = recv_frame(sock)
    if header.get("status") != OK:
        raise RuntimeError(header.get("reason", "site worker failed"))
    return payload


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise RuntimeError("site worker closed the connection mid-message")
        chunks += chunk
    return bytes(chunks)
