"""Compare deployment files with what the services read.

Each function returns a list of problems (empty: no drift), so the tests can
show both that the real files are clean and that a broken copy is caught.
The set of variables a service reads comes from the service itself:
`from_env` runs on the deployment's environment through a Mapping that
records every lookup, so it stays right as the config modules grow, and it
also proves the deployment's values parse.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from executor_service.config import ExecutorSettings
from imagegen_runtime.server_settings import ServerSettings
from planner_service.config import PlannerSettings

SECRET_PLACEHOLDER = "value-from-a-secret"
# A value from a Secret stands in with the shape its variable needs, so from_env parses it.
SECRET_PLACEHOLDERS_BY_SUFFIX = {"_COORDINATION_URL": "rediss://value-from-a-secret:6379/0"}


def secret_placeholder(name: str) -> str:
    for suffix, placeholder in SECRET_PLACEHOLDERS_BY_SUFFIX.items():
        if name.endswith(suffix):
            return placeholder
    return SECRET_PLACEHOLDER


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers which names were looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.looked_up: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.looked_up.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings should look names up, not scan the environment")

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class Service:
    settings: type[PlannerSettings] | type[ExecutorSettings]
    health_name: str  # the gRPC service the readiness probe asks about


def services() -> dict[str, Service]:
    # Imported here: the server modules pull in grpc and the adapters.
    from executor_service.bootstrap import SERVICE_NAME as EXECUTOR
    from planner_service.bootstrap import SERVICE_NAME as PLANNER

    return {"planner": Service(PlannerSettings, PLANNER), "executor": Service(ExecutorSettings, EXECUTOR)}


def read_settings(service: str, env: Mapping[str, str]) -> tuple[ServerSettings | None, list[str]]:
    """The service's settings for env, and problems: unread names, unparsable values."""
    recording = RecordingEnv(env)
    try:
        settings = services()[service].settings.from_env(recording)
    except ValueError as error:
        return None, [f"{service}: the service rejects its configuration: {error}"]
    unread = sorted(set(env) - recording.looked_up)
    return settings, [f"{service}: sets {name}, which the service does not read" for name in unread]


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


# ---- Kubernetes ---------------------------------------------------------------


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def container_env(container: dict[str, Any], configmaps: dict[str, dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    problems: list[str] = []
    for source in container.get("envFrom", []):
        if "configMapRef" not in source:
            problems.append(f"{container['name']}: envFrom {source} hides which names it sets; use env with secretKeyRef")
            continue
        name = source["configMapRef"]["name"]
        if name not in configmaps:
            problems.append(f"{container['name']}: envFrom a ConfigMap that is not rendered: {name}")
            continue
        env.update(configmaps[name].get("data", {}))
    for item in container.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else secret_placeholder(item["name"])
    return env, problems


def kubernetes_problems(objects: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    configmaps = _by_kind(objects, "ConfigMap")
    deployments = _by_kind(objects, "Deployment")
    svcs = _by_kind(objects, "Service")
    known = services()
    # Other Deployments (the dev Valkey) are not the services'; each service must have one.
    if missing := sorted(set(known) - set(deployments)):
        problems.append(f"no Deployment for {missing}")
    for name, deployment in deployments.items():
        if name not in known:
            continue
        pod = deployment["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == name]
        env, env_problems = container_env(container, configmaps)
        problems += env_problems
        settings, read_problems = read_settings(name, env)
        problems += read_problems
        if settings is None:
            continue
        port = port_of(settings.address)
        if not settings.address.startswith(("0.0.0.0:", "[::]:")):
            problems.append(f"{name}: listens on {settings.address}, unreachable from outside the pod")
        grpc_ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == "grpc"]
        if grpc_ports != [port]:
            problems.append(f"{name}: containerPort named grpc {grpc_ports} != listen port {port}")
        # grpc probes cannot do TLS: a TLS server is probed on its plaintext health port.
        security = settings.security
        probe_port, probed = port, "listen port"
        if security.health_address:
            probe_port, probed = port_of(security.health_address), "health port"
            health_ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == "health"]
            if health_ports != [probe_port]:
                problems.append(f"{name}: containerPort named health {health_ports} != health port {probe_port}")
        elif security.tls:
            problems.append(
                f"{name}: serves TLS, which grpc probes cannot do, and has no {security.variable('HEALTH_ADDRESS')}"
            )
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc_probe = container.get(probe, {}).get("grpc")
            if grpc_probe is None:
                problems.append(f"{name}: {probe} is not a grpc probe")
            elif grpc_probe["port"] != probe_port:
                problems.append(f"{name}: {probe} port {grpc_probe['port']} != {probed} {probe_port}")
        problems += _metrics_problems(name, settings, container, deployment)
        readiness_service = container.get("readinessProbe", {}).get("grpc", {}).get("service")
        if readiness_service != known[name].health_name:
            problems.append(f"{name}: readiness asks for {readiness_service!r}, the server reports {known[name].health_name!r}")
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        termination = pod.get("terminationGracePeriodSeconds", 30)
        if termination <= pre_stop + settings.shutdown_grace_seconds:
            problems.append(
                f"{name}: terminationGracePeriodSeconds {termination} <= preStop {pre_stop}"
                f" + shutdown grace {settings.shutdown_grace_seconds}"
            )
        service = svcs.get(name)
        if service is None:
            problems.append(f"{name}: no Service")
            continue
        ports = service["spec"]["ports"]
        listening = {"grpc": port, **({"metrics": metrics_port} if (metrics_port := _metrics_port(settings)) else {})}
        if [p.get("name") for p in ports] != list(listening):
            problems.append(f"{name}: Service ports are {[p.get('name') for p in ports]}, expected {list(listening)}")
        for p in ports:
            listen = listening.get(p.get("name"), port)
            target = p.get("targetPort", p["port"])
            target = listen if target == p.get("name") else target
            # Headless: clients dial pod IPs on the Service's port, so both must be the listen port.
            if (p["port"], target) != (listen, listen):
                problems.append(f"{name}: Service port {p['port']} -> {target} != listen port {listen}")
    return problems


def _metrics_port(settings: ServerSettings) -> int | None:
    address = settings.telemetry.metrics_address
    return port_of(address) if address else None


def _metrics_problems(name: str, settings: ServerSettings, container: dict[str, Any], deployment: dict[str, Any]) -> list[str]:
    """Metrics served means: reachable, the container port named metrics, and the
    scrape annotations pointing at it; no metrics means no such port."""
    declared = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == "metrics"]
    port = _metrics_port(settings)
    if port is None:
        return [f"{name}: declares a metrics port {declared} but serves no metrics"] if declared else []
    problems = []
    if not settings.telemetry.metrics_address.startswith(("0.0.0.0:", "[::]:")):
        problems.append(f"{name}: metrics on {settings.telemetry.metrics_address}, unreachable from outside the pod")
    if declared != [port]:
        problems.append(f"{name}: containerPort named metrics {declared} != metrics port {port}")
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    scrape = (annotations.get("prometheus.io/scrape"), annotations.get("prometheus.io/port"))
    if scrape != ("true", str(port)):
        problems.append(f"{name}: prometheus.io scrape annotations {scrape} do not point at metrics port {port}")
    return problems


def coordination_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Replicas keep one process's promises only through Valkey: every service an
    autoscaler scales must set its *_COORDINATION_URL (from the ConfigMap or a Secret),
    and so must every Deployment whose imagegen.io/coordination annotation says it
    coordinates."""
    problems: list[str] = []
    configmaps = _by_kind(objects, "ConfigMap")
    deployments = _by_kind(objects, "Deployment")
    scaled = {
        hpa["spec"]["scaleTargetRef"]["name"]
        for hpa in objects
        if hpa["kind"] == "HorizontalPodAutoscaler" and hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    }
    for name in sorted(services()):
        deployment = deployments.get(name)
        if deployment is None:
            continue
        marked = "imagegen.io/coordination" in deployment["metadata"].get("annotations", {})
        if name not in scaled and not marked:
            continue
        (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
        env, _ = container_env(container, configmaps)
        variable = f"{name.upper()}_COORDINATION_URL"
        if not env.get(variable):
            why = "is autoscaled" if name in scaled else "is marked imagegen.io/coordination"
            problems.append(f"{name}: {why} but sets no {variable}: its replicas would not coordinate")
    return problems


# ---- compose ------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> str:
    """Compose's ${NAME:-default} with nothing set in the environment."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", duration))


def compose_problems(model: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for name in services():
        service = model["services"].get(name)
        if service is None:
            problems.append(f"compose: no {name} service")
            continue
        env = {key: _interpolate(value) for key, value in (service.get("environment") or {}).items()}
        settings, read_problems = read_settings(name, env)
        problems += [f"compose {p}" for p in read_problems]
        if settings is None:
            continue
        port = port_of(settings.address)
        published = [str(p).rpartition(":")[2] for p in service.get("ports", [])]
        listening = [str(p) for p in (port, _metrics_port(settings)) if p]
        if published != listening:
            problems.append(f"compose {name}: container ports {published} != listen and metrics ports {listening}")
        if service.get("build", {}).get("target") != name:
            problems.append(f"compose {name}: builds target {service.get('build', {}).get('target')!r}")
        check = service.get("healthcheck", {}).get("test", [])
        if check[-2:] != ["/opt/imagegen/healthcheck.py", name]:
            problems.append(f"compose {name}: health check {check} does not check {name}")
        stop = _seconds(service.get("stop_grace_period", "10s"))
        if stop <= settings.shutdown_grace_seconds:
            problems.append(f"compose {name}: stop_grace_period {stop}s <= shutdown grace {settings.shutdown_grace_seconds}s")
    return problems


# ---- Dockerfile ---------------------------------------------------------------


def dockerfile_stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (instruction, arguments), continuation lines joined."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            current = []
            stages[args.split()[-1]] = current
        current.append((instruction, args.strip()))
    return stages


def dockerfile_problems(text: str) -> list[str]:
    problems: list[str] = []
    stages = dockerfile_stages(text)
    for name in services():
        stage = stages.get(name)
        if stage is None:
            problems.append(f"Dockerfile: no target {name}")
            continue
        env: dict[str, str] = {}
        for instruction, args in stage:
            if instruction == "ENV":
                env.update(re.findall(r"(\w+)=(\S+)", args))
        settings, read_problems = read_settings(name, env)
        problems += [f"Dockerfile {p}" for p in read_problems]
        if settings is None:
            continue
        port = port_of(settings.address)
        exposed = [args for instruction, args in stage if instruction == "EXPOSE"]
        if exposed != [str(port)]:
            problems.append(f"Dockerfile {name}: EXPOSE {exposed} != listen port {port}")
        entrypoint = [args for instruction, args in stage if instruction == "ENTRYPOINT"]
        if entrypoint != [f'["python", "-m", "{name}_service"]']:
            problems.append(f"Dockerfile {name}: ENTRYPOINT {entrypoint}")
        health = [args for instruction, args in stage if instruction == "HEALTHCHECK"]
        if not health or not health[0].endswith(f'"/opt/imagegen/healthcheck.py", "{name}"]'):
            problems.append(f"Dockerfile {name}: HEALTHCHECK {health} does not check {name}")
    return problems
