"""`python -m executor_service` or `python -m planner_service` as a child process on
127.0.0.1, for tests that need real processes (several replicas, a signal, a kill): its
gRPC target, its metrics, its JSON log.

The ports are picked free by the test (EXECUTOR_ADDRESS and EXECUTOR_METRICS_ADDRESS, or
the PLANNER_ ones), since port 0 would leave it no way to learn them; serving() returns
once health says SERVING.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support.s3_server import free_ports

REPO = Path(__file__).resolve().parents[2]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def health(target: str) -> int | None:
    """The server's overall health status, or None when it does not answer."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return None
    return response.status


class ServiceProcess:
    def __init__(
        self, service: Literal["executor", "planner"], name: str, env: dict[str, str], log_dir: Path
    ) -> None:
        """`python -m {service}_service` with env (and PATH, PYTHONPATH, JSON logs), its
        output to log_dir/{name}.log, its working directory log_dir."""
        self.name = name
        self.module = f"{service}_service"
        port, metrics_port = free_ports(2)
        self.target = f"127.0.0.1:{port}"
        self.metrics_port = metrics_port
        self.log_path = log_dir / f"{name}.log"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            "LOG_FORMAT": "json",
            **env,
            f"{service.upper()}_ADDRESS": self.target,
            f"{service.upper()}_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> ServiceProcess:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module], cwd=self.log_path.parent, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            )
        return self

    async def serving(self, timeout: float = 30) -> ServiceProcess:
        """Return once health says SERVING (a bounded poll of the child's state)."""
        async with asyncio.timeout(timeout):
            while await health(self.target) != health_pb2.HealthCheckResponse.SERVING:
                assert self.process is not None and self.process.poll() is None, self.log_path.read_text()
                await asyncio.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: a replica that dies mid-work, with no goodbye to anyone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with _NO_PROXY.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
        return records

    def messages(self, containing: str) -> list[str]:
        return [r["message"] for r in self.log_records() if containing in r.get("message", "")]


async def start_all(processes: list[ServiceProcess]) -> list[ServiceProcess]:
    """Spawn them all, then wait for each to serve (they start in parallel)."""
    for process in processes:
        process.spawn()
    await asyncio.gather(*(process.serving() for process in processes))
    return processes
