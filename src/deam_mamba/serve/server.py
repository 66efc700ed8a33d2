"""``deam-mamba serve``: bind the socket, load the run once, run uvicorn until Ctrl-C.

The socket is bound before the model loads, so a port in use fails at once with a one-line error; port 0
takes a free port (the URL handed to ``announce`` says which). The default host is loopback: the page and
API are reachable from this machine only.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from deam_mamba.core.errors import ConfigError, DeamError
from deam_mamba.inference.predictor import Predictor
from deam_mamba.serve.app import create_app

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 100.0


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` (not yet listening); DeamError if the port is taken."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DeamError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (port in use? choose another with "
                        f"--port, or 0 for any free port)") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(run_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, which: str = "best",
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, device: str = "cpu",
          announce: Callable[[str], None] | None = None) -> None:
    """Serve ``run_dir`` on ``http://host:port/`` until interrupted; ``announce(url)`` once it is ready."""
    if not max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
    sock = bind_socket(host, port)
    try:
        predictor = Predictor.from_run(run_dir, which=which, device=device)
        app = create_app(predictor, max_upload_bytes=int(max_upload_mb * 1024 ** 2), which=which)
        import uvicorn  # lazy: only the serve command needs the web server

        server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=10))
        if not is_loopback(host):
            log.warning("listening on %s, not loopback: anyone who can reach this machine can upload files", host)
        if announce is not None:
            announce(url_of(sock))
        server.run(sockets=[sock])
    finally:
        sock.close()
