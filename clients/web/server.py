"""Serve the web app with uvicorn inside a running event loop, beside the gRPC servers.

`imagegen up` and `imagegen demo` use it; a game backend mounts the app in its own
ASGI server instead. uvicorn's own signal handling is left out: whoever runs the loop
decides when to stop (imagegen_runtime.serving.serve_until_signalled, for the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp

# How long start() waits for uvicorn to be serving before it gives up.
START_TIMEOUT_SECONDS = 10.0
DEFAULT_PORTS = {"http": 80, "https": 443}


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the loop's owner handles SIGTERM and SIGINT


class WebServer:
    """The app listening on host:port (port 0: a free one, then .port says which)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self._socket = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._server = _Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> WebServer:
        """Serve in the background; return once uvicorn accepts connections (the socket
        listens already, so nothing sent meanwhile is refused)."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("the web server stopped while starting")
                await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        """Stop accepting, let responses in flight finish (uvicorn's own grace), close."""
        if self._task is not None:
            self._server.should_exit = True
            await self._task
        self._socket.close()


def web_address(public_base_url: str) -> tuple[str, int, str]:
    """(host, port, path) of a base URL such as EXECUTOR_PUBLIC_BASE_URL
    ("http://127.0.0.1:8000/images" -> ("127.0.0.1", 8000, "/images")); ValueError if it
    is not an http(s) URL with a host."""
    parts = urlsplit(public_base_url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{public_base_url!r}: expected an http:// or https:// URL with a host")
    return parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme], parts.path.rstrip("/")
