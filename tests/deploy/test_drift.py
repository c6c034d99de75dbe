"""No drift between the services' config code and the deployment files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy import checks, drift

pytestmark = pytest.mark.integration


def _compose() -> dict[str, Any]:
    return yaml.safe_load((checks.REPO / checks.COMPOSE_FILE).read_text())


def _dockerfile() -> str:
    return (checks.REPO / checks.DOCKERFILE).read_text()


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return _find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def _configmap(objects: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(prefix)]
    return found


@pytest.mark.parametrize("name", list(checks.TARGETS.values()))
def test_kubernetes_matches_what_the_services_read(manifests: dict[str, list[dict[str, Any]]], name: str) -> None:
    assert drift.kubernetes_problems(manifests[name]) == []


def test_compose_matches_what_the_services_read() -> None:
    assert drift.compose_problems(_compose()) == []


def test_dockerfile_matches_what_the_services_read() -> None:
    assert drift.dockerfile_problems(_dockerfile()) == []


# ---- the checks bite: each breaks a copy and expects exactly the new problems ----


def _new_kubernetes_problems(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    known = set(drift.kubernetes_problems(before))
    return [p for p in drift.kubernetes_problems(after) if p not in known]


def test_an_unknown_variable_in_a_configmap_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["prod.yaml"])
    _configmap(objects, "planner-config")["data"]["PLANNER_TIMEOUT"] = "5"
    assert _new_kubernetes_problems(manifests["prod.yaml"], objects) == [
        "planner: sets PLANNER_TIMEOUT, which the service does not read"
    ]


def test_an_unknown_secret_variable_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["dev.yaml"])
    _container(objects, "executor").setdefault("env", []).append(
        {"name": "EXECUTOR_S3_KEY", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}
    )
    assert _new_kubernetes_problems(manifests["dev.yaml"], objects) == [
        "executor: sets EXECUTOR_S3_KEY, which the service does not read"
    ]


def test_a_value_the_service_rejects_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["base.yaml"])
    _configmap(objects, "executor-config")["data"]["EXECUTOR_SHUTDOWN_GRACE_SECONDS"] = "soon"
    (problem,) = _new_kubernetes_problems(manifests["base.yaml"], objects)
    assert "EXECUTOR_SHUTDOWN_GRACE_SECONDS" in problem and "rejects" in problem


def test_a_port_mismatch_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["base.yaml"])
    _configmap(objects, "planner-config")["data"]["PLANNER_ADDRESS"] = "0.0.0.0:6000"
    problems = _new_kubernetes_problems(manifests["base.yaml"], objects)
    assert any("containerPort" in p for p in problems)
    assert any("readinessProbe port" in p for p in problems)
    assert any("Service port" in p for p in problems)


def test_a_termination_grace_shorter_than_the_drain_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["base.yaml"])
    _configmap(objects, "executor-config")["data"]["EXECUTOR_SHUTDOWN_GRACE_SECONDS"] = "60"
    (problem,) = _new_kubernetes_problems(manifests["base.yaml"], objects)
    assert "terminationGracePeriodSeconds" in problem


def test_tls_without_a_plaintext_health_port_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["prod.yaml"])
    del _configmap(objects, "planner-config")["data"]["PLANNER_HEALTH_ADDRESS"]
    problems = _new_kubernetes_problems(manifests["prod.yaml"], objects)
    assert "planner: serves TLS, which grpc probes cannot do, and has no PLANNER_HEALTH_ADDRESS" in problems
    assert any("readinessProbe port 50061 != listen port 50051" in p for p in problems)


def test_probes_off_the_health_port_are_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["prod.yaml"])
    _container(objects, "executor")["livenessProbe"]["grpc"]["port"] = 50052  # the TLS port
    assert _new_kubernetes_problems(manifests["prod.yaml"], objects) == [
        "executor: livenessProbe port 50052 != health port 50062"
    ]


def test_a_readiness_probe_for_another_service_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["base.yaml"])
    _container(objects, "executor")["readinessProbe"]["grpc"]["service"] = "imagegen.v1.PlannerService"
    (problem,) = _new_kubernetes_problems(manifests["base.yaml"], objects)
    assert "readiness asks for" in problem


def test_compose_drift_is_caught() -> None:
    model = _compose()
    model["services"]["executor"]["environment"]["EXECUTOR_UNKNOWN_SETTING"] = "1"
    model["services"]["planner"]["ports"] = ["127.0.0.1:50051:50055"]
    model["services"]["planner"]["stop_grace_period"] = "5s"
    known = set(drift.compose_problems(_compose()))
    problems = [p for p in drift.compose_problems(model) if p not in known]
    assert "compose executor: sets EXECUTOR_UNKNOWN_SETTING, which the service does not read" in problems
    assert any("container ports" in p for p in problems)
    assert any("stop_grace_period" in p for p in problems)


def test_dockerfile_drift_is_caught() -> None:
    text = _dockerfile().replace("EXPOSE 50052", "EXPOSE 8080").replace("PLANNER_ADDRESS=", "PLANNER_LISTEN=")
    known = set(drift.dockerfile_problems(_dockerfile()))
    problems = [p for p in drift.dockerfile_problems(text) if p not in known]
    assert "Dockerfile planner: sets PLANNER_LISTEN, which the service does not read" in problems
    assert any("EXPOSE ['8080']" in p for p in problems)


def test_the_recording_env_sees_every_lookup() -> None:
    env = drift.RecordingEnv({"PLANNER_ADDRESS": "0.0.0.0:1"})
    settings = drift.services()["planner"].settings.from_env(env)
    assert settings.address == "0.0.0.0:1"
    assert {"PLANNER_ADDRESS", "PLANNER_SHUTDOWN_GRACE_SECONDS", "LOG_LEVEL"} <= env.looked_up


def test_every_secret_the_manifests_reference_is_documented(manifests: dict[str, list[dict[str, Any]]]) -> None:
    """docs/deploy.md tells operators which Secrets to create, with which keys."""
    docs = (checks.REPO / "docs/deploy.md").read_text()
    refs: set[tuple[str, str]] = set()
    mounted: set[tuple[str, tuple[str, ...]]] = set()
    for objects in manifests.values():
        assert [o for o in objects if o["kind"] == "Secret"] == [], "Secrets are created by operators, not committed"
        for o in objects:
            for container in _pod_containers(o):
                for item in container.get("env", []):
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        refs.add((ref["name"], ref["key"]))
            for volume in _pod_spec(o).get("volumes", []):
                if "secret" in volume:
                    keys = tuple(item["key"] for item in volume["secret"].get("items", []))
                    mounted.add((volume["secret"]["secretName"], keys))
    assert refs, "expected the overlays to reference Secrets"
    for name, key in sorted(refs):
        command = f"kubectl create secret generic {name}"
        assert command in docs, f"docs/deploy.md does not say how to create {name}"
        section = docs[docs.index(command) :].split("\n\n", 1)[0]
        assert f"--from-literal={key}=" in section, f"docs/deploy.md does not set {name}'s key {key}"
    assert mounted, "expected the TLS components to mount Secrets"
    for name, keys in sorted(mounted):
        # TLS Secrets: `kubectl create secret tls NAME` (tls.crt, tls.key) or generic with --from-file.
        commands = [f"kubectl create secret tls {name} ", f"kubectl create secret generic {name} "]
        found = [c for c in commands if c in docs]
        assert found, f"docs/deploy.md does not say how to create {name}"
        section = docs[docs.index(found[0]) :].split("\n\n", 1)[0]
        for key in keys:
            assert f"--from-file={key}=" in section, f"docs/deploy.md does not set {name}'s key {key}"


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec", {})
    return spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})


def _pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return _pod_spec(obj).get("containers", [])


def test_deploy_paths_exist() -> None:
    for path in (checks.DOCKERFILE, checks.COMPOSE_FILE, *checks.TARGETS):
        assert Path(checks.REPO, path).exists(), path


# ---- several replicas coordinate (docs/deploy.md, "Running more than one replica") ----


@pytest.mark.parametrize("name", list(checks.TARGETS.values()))
def test_every_autoscaled_service_coordinates(manifests: dict[str, list[dict[str, Any]]], name: str) -> None:
    assert drift.coordination_problems(manifests[name]) == []


def test_an_autoscaled_service_without_coordination_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["prod.yaml"])
    container = _container(objects, "executor")
    container["env"] = [e for e in container["env"] if not e["name"].startswith("EXECUTOR_COORDINATION_")]
    del _find(objects, "Deployment", "executor")["metadata"]["annotations"]["imagegen.io/coordination"]
    assert drift.coordination_problems(objects) == [
        "executor: is autoscaled but sets no EXECUTOR_COORDINATION_URL: its replicas would not coordinate"
    ]


def test_a_service_marked_coordinated_without_a_url_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["dev.yaml"])
    del _configmap(objects, "planner-config")["data"]["PLANNER_COORDINATION_URL"]
    assert drift.coordination_problems(objects) == [
        "planner: is marked imagegen.io/coordination but sets no PLANNER_COORDINATION_URL: its replicas would not coordinate"
    ]


def test_compose_runs_valkey_for_both_services() -> None:
    services = _compose()["services"]
    valkey = services["valkey"]
    assert valkey["image"].startswith("valkey/valkey:")
    assert "ports" not in valkey, "Valkey is for the services only"
    assert valkey["healthcheck"]["test"] == ["CMD", "valkey-cli", "ping"]
    assert valkey["command"][valkey["command"].index("--save") + 1] == ""
    for name in ("planner", "executor"):
        url = urlsplit(services[name]["environment"][f"{name.upper()}_COORDINATION_URL"])
        assert (url.scheme, url.hostname, url.port) == ("redis", "valkey", 6379)
        assert services[name]["depends_on"]["valkey"] == {"condition": "service_healthy"}
