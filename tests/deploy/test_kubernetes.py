"""The kustomize targets render, validate strictly, pass checkov, and keep the
properties docs/deploy.md promises (hardening, probes, headless Services)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import checks, drift

pytestmark = pytest.mark.integration

CANARY = "canary-privileged.yaml"


@pytest.mark.parametrize("name", list(checks.TARGETS.values()))
def test_rendered_manifests_validate_strictly(rendered_dir: Path, name: str) -> None:
    result = checks.run(checks.validate(name, str(rendered_dir)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(
    rendered_dir: Path, manifests: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    objects = copy.deepcopy(manifests["prod.yaml"])
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcPort"] = 50051
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump_all(objects))
    result = checks.run(checks.validate("broken.yaml", str(tmp_path)))
    assert result.returncode != 0
    assert "grpcPort" in result.stdout + result.stderr


@pytest.fixture(scope="session")
def checkov_report(rendered_dir: Path, manifests: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One checkov run over everything (it takes seconds to start): the deployed
    overlays, the Dockerfile, and a canary that must fail, proving the scan ran."""
    canary = copy.deepcopy(manifests["dev.yaml"])
    for o in canary:
        if o["kind"] == "Deployment":
            o["metadata"]["name"] += "-canary"
            o["metadata"].pop("annotations", None)
            o["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    (rendered_dir / CANARY).write_text(yaml.safe_dump_all([o for o in canary if o["kind"] == "Deployment"]))
    # The documented command, reporting passed checks too (--quiet drops them), as JSON.
    argv = [a for a in checks.checkov(str(rendered_dir)) if a != "--quiet"]
    argv += ["-f", str(rendered_dir / CANARY), "--output", "json"]
    result = checks.run(argv, timeout=300)
    reports = json.loads(result.stdout)
    by_file: dict[str, dict[str, Any]] = {}
    for report in reports if isinstance(reports, list) else [reports]:
        for outcome in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in report["results"][outcome]:
                entry = by_file.setdefault(Path(check["file_path"]).name, {"passed": 0, "failed": [], "skipped": []})
                if outcome == "passed_checks":
                    entry["passed"] += 1
                else:
                    entry[outcome.split("_")[0]].append(f"{check['check_id']} {check['resource']}")
    return by_file


@pytest.mark.parametrize("name", [*checks.DEPLOYED, Path(checks.DOCKERFILE).name])
def test_checkov_passes(checkov_report: dict[str, dict[str, Any]], name: str) -> None:
    report = checkov_report.get(name)
    assert report is not None and report["passed"] > 0, f"checkov did not scan {name}"
    assert report["failed"] == []


def test_checkov_catches_a_privileged_container(checkov_report: dict[str, dict[str, Any]]) -> None:
    assert any(f.startswith("CKV_K8S_16 ") for f in checkov_report[CANARY]["failed"])


def test_every_checkov_skip_says_why(manifests: dict[str, list[dict[str, Any]]]) -> None:
    skips = [
        (o["metadata"]["name"], value)
        for objects in manifests.values()
        for o in objects
        for key, value in o["metadata"].get("annotations", {}).items()
        if key.startswith("checkov.io/skip")
    ]
    assert skips
    for name, value in skips:
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+=\S.{15,}", value), f"{name}: skip without a reason: {value}"
    assert "checkov:skip" not in (checks.REPO / checks.DOCKERFILE).read_text()


def test_checkov_is_on_the_path_the_checks_use() -> None:
    assert shutil.which(checks.executable(["checkov"])[0])


# ---- what the docs promise ------------------------------------------------------


def _pods(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


@pytest.mark.parametrize("name", list(checks.TARGETS.values()))
def test_every_pod_is_hardened(manifests: dict[str, list[dict[str, Any]]], name: str) -> None:
    for workload, pod in _pods(manifests[name]):
        assert pod["automountServiceAccountToken"] is False, workload
        assert pod["securityContext"]["runAsNonRoot"] is True, workload
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        mounts_by_volume = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, workload
            assert context["allowPrivilegeEscalation"] is False, workload
            assert context["capabilities"] == {"drop": ["ALL"]}, workload
            assert {"/tmp"} <= {m["mountPath"] for m in container["volumeMounts"]}, workload
            assert {m["name"] for m in container["volumeMounts"]} <= mounts_by_volume | {"data"}, workload
            assert set(container["resources"]) == {"requests", "limits"}, workload


def test_services_are_headless_with_grpc_and_metrics_ports(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("planner", "executor"):
        (service,) = [o for o in manifests["prod.yaml"] if o["kind"] == "Service" and o["metadata"]["name"] == name]
        assert service["spec"]["clusterIP"] == "None"
        assert [p["name"] for p in service["spec"]["ports"]] == ["grpc", "metrics"]


def test_prod_autoscales_and_isolates(manifests: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in manifests["prod.yaml"]}
    for name in ("planner", "executor"):
        assert ("HorizontalPodAutoscaler", name) in kinds
        assert ("PodDisruptionBudget", name) in kinds
        assert ("NetworkPolicy", name) in kinds
    assert ("NetworkPolicy", "default-deny") in kinds
    assert not any(kind == "StatefulSet" for kind, _ in kinds), "prod uses an operator-run MinIO"
    for o in manifests["prod.yaml"]:
        if o["kind"] == "Deployment":
            assert "replicas" not in o["spec"], "the HPA owns replicas"


# ---- several replicas coordinate through Valkey ---------------------------------


def _overlay(tmp_path: Path, components: list[str]) -> subprocess.CompletedProcess[str]:
    """Render an overlay of base and the given components, written under tmp_path."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    kubernetes = checks.REPO / "deploy/kubernetes"

    def relative(path: str) -> str:  # kustomize refuses absolute paths
        return os.path.relpath(kubernetes / path, overlay)

    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [relative("base")],
                "components": [relative(f"components/{c}") for c in components],
            }
        )
    )
    return checks.run(["kubectl", "kustomize", str(overlay)])


def test_autoscaling_without_coordination_does_not_render(tmp_path: Path) -> None:
    result = _overlay(tmp_path, ["network-policies", "autoscaling"])
    assert result.returncode != 0
    assert "imagegen.io/coordination" in result.stderr


@pytest.mark.parametrize("coordination", ["valkey-dev", "coordination"])
def test_autoscaling_renders_after_a_coordination_component(tmp_path: Path, coordination: str) -> None:
    result = _overlay(tmp_path, [coordination, "autoscaling"])
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    assert drift.coordination_problems(objects) == []
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert len(hpas) == 2
    for hpa in hpas:
        assert hpa["metadata"]["annotations"]["imagegen.io/coordination"]


@pytest.mark.parametrize("name", ["prod.yaml", "prod-mtls.yaml"])
def test_prod_coordinates_through_a_secret(manifests: dict[str, list[dict[str, Any]]], name: str) -> None:
    for service in ("planner", "executor"):
        (deployment,) = [o for o in manifests[name] if o["kind"] == "Deployment" and o["metadata"]["name"] == service]
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        for key in ("url", "password"):
            variable = f"{service.upper()}_COORDINATION_{key.upper()}"
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "coordination", "key": key, "optional": False}
    assert not any(o["metadata"]["name"] == "valkey" for o in manifests[name]), "prod uses a managed Valkey"
    (egress,) = [o for o in manifests[name] if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "coordination-egress"]
    assert egress["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 6379}]


def _policy(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == name]
    return policy["spec"]


def test_only_the_services_reach_the_dev_valkey(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = manifests["dev.yaml"]
    valkey = _policy(objects, "valkey")
    assert valkey["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "valkey"}}
    assert valkey["policyTypes"] == ["Ingress", "Egress"] and "egress" not in valkey
    (rule,) = valkey["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "planner"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "executor"}}},
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    services = _policy(objects, "coordination")
    assert services["podSelector"]["matchExpressions"][0]["values"] == ["planner", "executor"]
    (rule,) = services["egress"]
    assert rule["to"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "valkey"}}
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    (service,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "valkey"]
    assert [p["port"] for p in service["spec"]["ports"]] == [6379]


def test_the_dev_valkey_is_one_node_without_persistence(manifests: dict[str, list[dict[str, Any]]]) -> None:
    (deployment,) = [o for o in manifests["dev.yaml"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "valkey"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"].startswith("valkey/valkey:") and not container["image"].endswith(":latest")
    args = container["args"]
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert args[args.index("--maxmemory-policy") + 1] != "noeviction"
    assert container["readinessProbe"]["exec"]["command"] == ["valkey-cli", "ping"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data", "/tmp"}
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert all("emptyDir" in v for v in volumes.values())
