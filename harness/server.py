"""Start the real service (``python -m service`` under uvicorn, or any server command) on a free loopback port and
wait until it is ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit code (kill after ``timeout_s``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_until_healthy(
    process: subprocess.Popen[bytes], health_url: str, timeout_s: float, logs: Callable[[], str]
) -> None:
    """Poll ``health_url`` until it answers 200; raise (with ``logs()``) if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{logs()}")
        try:
            if httpx.get(health_url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{health_url} not healthy after {timeout_s} s:\n{logs()}")


def start_server(
    env: Mapping[str, str],
    log_path: Path,
    port: int | None = None,
    module: str = "service",
    health_path: str = "/health/ready",
) -> RunningServer:
    """Run ``python -m <module>`` with ``DIGITS_*`` settings from ``env``; block until ``health_path`` is 200."""
    port = port or free_port()
    server_env = {"DIGITS_HOST": "127.0.0.1", "DIGITS_PORT": str(port), **env}
    return start_command([sys.executable, "-m", module], server_env, log_path, port, health_path)


def start_command(
    command: Sequence[str], env: Mapping[str, str], log_path: Path, port: int, health_path: str = "/health/ready"
) -> RunningServer:
    """Run ``command``, a server that listens on ``port`` of loopback, with ``env`` added to this process's
    environment; block until its ``health_path`` is 200."""
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    server = RunningServer(process=process, port=port, log_path=log_path)
    try:
        wait_until_healthy(process, f"{server.url}{health_path}", READY_TIMEOUT_S, server.log)
    except RuntimeError:
        server.stop(signal.SIGKILL)
        raise
    return server


@contextmanager
def running_server(env: Mapping[str, str], log_path: Path) -> Iterator[RunningServer]:
    server = start_server(env, log_path)
    try:
        yield server
    finally:
        server.stop()
