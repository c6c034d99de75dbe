"""Container health check: exit 0 when the local gRPC server reports SERVING.

    python /opt/imagegen/healthcheck.py planner|executor

The port comes from the service's own settings (PlannerSettings/ExecutorSettings
.from_env()), read from the same environment the server started with, so the
check cannot drift from the address the server listens on: the plaintext health
port (*_HEALTH_ADDRESS) when there is one, which a TLS server needs for this
check, else the service's own port. Docker and compose use it; Kubernetes uses
its native grpc probes instead.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

WILDCARD_HOSTS = {"", "0.0.0.0", "[::]", "::"}


def listen_address(service: str) -> str:
    if service == "planner":
        from planner_service.config import PlannerSettings

        planner = PlannerSettings.from_env()
        return planner.security.health_address or planner.address
    if service == "executor":
        from executor_service.config import ExecutorSettings

        executor = ExecutorSettings.from_env()
        return executor.security.health_address or executor.address
    raise SystemExit(f"usage: {sys.argv[0]} planner|executor")


def target_for(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"{'127.0.0.1' if host in WILDCARD_HOSTS else host}:{port}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(f"usage: {argv[0]} planner|executor")
    target = target_for(listen_address(argv[1]))
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as error:
            print(f"{target}: {error.code().name}", file=sys.stderr)
            return 1
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
