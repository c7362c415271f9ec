"""deploy/k8s, validated as far as it can be without a cluster: every manifest against the
bundled schemas of a current Kubernetes (kubernetes-validate, strict: unknown fields fail),
every environment variable is a setting the service knows, and the shutdown arithmetic holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.version import Version

from service.settings import Settings

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUBERNETES = kubernetes_validate.latest_version()


def documents() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def seconds(container: dict[str, Any], name: str) -> float:
    return float(env_of(container)[name]["value"])


def test_the_manifests_are_all_there() -> None:
    kinds = sorted(doc["kind"] for doc in documents())
    assert kinds == ["Deployment", "Job", "PodDisruptionBudget", "Service", "Service"]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid_for_a_current_kubernetes(doc: dict[str, Any]) -> None:
    assert Version(KUBERNETES) >= Version("1.35")  # a current release, not an old schema
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_every_environment_variable_is_a_setting_of_the_service() -> None:
    known = {info.alias for info in Settings.model_fields.values()}
    for doc in by_kind("Deployment") + by_kind("Job"):
        for container in pod_spec(doc)["containers"]:
            unknown = set(env_of(container)) - known
            assert not unknown, f"{doc['metadata']['name']}: not settings: {unknown}"


def test_shutdown_fits_in_the_termination_grace_period_and_probes_agree() -> None:
    (deployment,) = by_kind("Deployment")
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    drain = seconds(container, "SHUTDOWN_DRAIN_SECONDS")
    grace = seconds(container, "SHUTDOWN_GRACE_SECONDS")
    assert drain > 0
    # The kubelet's SIGKILL comes after the service's own shutdown, never during it.
    assert spec["terminationGracePeriodSeconds"] >= drain + grace
    # Readiness notices NOT_SERVING well within the drain...
    ready = container["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] < drain
    # ...and liveness never kills a pod that is still shutting down.
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > drain + grace
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 50051, "service": ""}, probe
    assert seconds(container, "GRPC_PORT") == 50051


def test_workers_follow_the_cpu_request() -> None:
    (deployment,) = by_kind("Deployment")
    (container,) = pod_spec(deployment)["containers"]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    source = env_of(container)["GRPC_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert source == {
        "containerName": container["name"],
        "resource": "requests.cpu",
        "divisor": "1",
    }


def test_services_budget_and_job_select_what_they_should() -> None:
    (deployment,) = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    services = {s["metadata"]["name"]: s["spec"] for s in by_kind("Service")}
    assert services["blog-headless"]["clusterIP"] == "None"
    assert services["blog"]["type"] == "ClusterIP"
    for spec in services.values():
        assert spec["selector"] == labels
    (budget,) = by_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == labels
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    (job,) = by_kind("Job")
    (migrate,) = pod_spec(job)["containers"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert job["spec"]["template"]["metadata"]["labels"] != labels  # not behind the Services
