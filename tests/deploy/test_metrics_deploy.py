"""The deploy files expose each service's metrics port, and the drift check
catches a metrics port that does not match what the service listens on."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import checks, drift

pytestmark = pytest.mark.integration

METRICS_PORTS = {"planner": 9464, "executor": 9465}


def _deployment(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return deployment


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (container,) = _deployment(objects, name)["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("target", ["base.yaml", "dev.yaml", "prod.yaml"])
def test_every_target_serves_metrics_on_the_port_it_declares(
    manifests: dict[str, list[dict[str, Any]]], target: str
) -> None:
    objects = manifests[target]
    for name, port in METRICS_PORTS.items():
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in _container(objects, name)["ports"]
        annotations = _deployment(objects, name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/scrape"] == "true"
    assert drift.kubernetes_problems(objects) == []


def test_the_network_policies_let_prometheus_scrape(manifests: dict[str, list[dict[str, Any]]]) -> None:
    (policy,) = [o for o in manifests["prod.yaml"] if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "metrics"]
    assert sorted(p["port"] for p in policy["spec"]["ingress"][0]["ports"]) == sorted(METRICS_PORTS.values())


def test_the_executors_liveness_ignores_the_store(manifests: dict[str, list[dict[str, Any]]]) -> None:
    from imagegen_runtime.health import LIVENESS

    assert _container(manifests["prod.yaml"], "executor")["livenessProbe"]["grpc"]["service"] == LIVENESS


def test_a_metrics_port_mismatch_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["prod.yaml"])
    container = _container(objects, "executor")
    container["ports"] = [p for p in container["ports"] if p["name"] != "metrics"]
    _deployment(objects, "planner")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "9999"
    (service,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "planner"]
    service["spec"]["ports"][1]["port"] = 9999
    problems = drift.kubernetes_problems(objects)
    assert any("containerPort named metrics [] != metrics port 9465" in p for p in problems)
    assert any("planner: prometheus.io scrape annotations" in p for p in problems)
    assert any("planner: Service port 9999" in p for p in problems)


def test_a_metrics_port_without_metrics_is_caught(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(manifests["prod.yaml"])
    for configmap in (o for o in objects if o["kind"] == "ConfigMap"):
        configmap.get("data", {}).pop("PLANNER_METRICS_ADDRESS", None)
    problems = drift.kubernetes_problems(objects)
    assert any("planner: declares a metrics port [9464] but serves no metrics" in p for p in problems)


def test_compose_publishes_the_metrics_ports() -> None:
    model = yaml.safe_load(Path(checks.REPO / "deploy/compose.yaml").read_text())
    assert drift.compose_problems(model) == []
    model["services"]["executor"]["ports"] = model["services"]["executor"]["ports"][:1]
    assert any("compose executor: container ports" in p for p in drift.compose_problems(model))
