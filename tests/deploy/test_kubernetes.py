"""The Kubernetes manifests (deploy/kubernetes/): valid against the Kubernetes API schemas of a pinned release, and
in agreement with the app, the image and compose (ports, probe paths, settings, image names, limits).

The base and both overlays are rendered as kustomize renders them (tests/support/kustomize.py) and validated with
``kubernetes-validate``. Its schemas are the core API's only: the ServiceMonitor (Prometheus operator) and the
InferenceService (KServe) are custom resources it cannot validate, so they are checked structurally here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from starlette.routing import Route

from harness.server import REPO_ROOT
from service.api import ui
from service.config import Settings
from service.main import create_app
from service.telemetry import Telemetry
from tests.support.deploy import (
    COMPOSE_FILE,
    GPU_OVERRIDE_FILE,
    deployed_app_environment,
    dockerfile_instructions,
    image_env,
    load_yaml,
    nginx_body_limit_bytes,
    nginx_rate_limit,
    nginx_size_bytes,
)
from tests.support.kustomize import Resource, load_documents, render
from tests.support.servers import clean_settings

# The Kubernetes release whose API schemas the manifests must satisfy.
KUBERNETES_VERSION = "1.33.0"
KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
BASE, CPU, GPU = KUBERNETES / "base", KUBERNETES / "overlays" / "cpu", KUBERNETES / "overlays" / "gpu"
EXTRAS = KUBERNETES / "extras"
CUSTOM_RESOURCES = {"ServiceMonitor", "InferenceService"}
FOOTPRINT = REPO_ROOT / "bench" / "results" / "footprint.json"
_MEMORY_UNITS = {"Mi": 1, "Gi": 1024}


def by_kind(resources: list[Resource]) -> dict[str, Resource]:
    kinds = {resource["kind"]: resource for resource in resources}
    assert len(kinds) == len(resources), "one resource of each kind"
    return kinds


def container(deployment: Resource) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def environment(spec: dict[str, Any]) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in spec["env"]}


def memory_mib(quantity: str) -> int:
    return int(quantity[:-2]) * _MEMORY_UNITS[quantity[-2:]]


def app_paths() -> list[str]:
    """Every route of the app, path parameters filled in (``/static/{name}`` to ``/static/name``).

    The documented API, the documentation's own routes and the web page's (which the schema leaves out).
    """
    app = create_app(clean_settings())
    templates = [*app.openapi()["paths"], *(route.path for route in app.routes if isinstance(route, Route))]
    templates += [route.path for route in ui.router.routes if isinstance(route, Route)]
    return [path.replace("{", "").replace("}", "").replace("model_name", "cnn") for path in templates]


def ingress_routes(ingress: Resource, path: str) -> bool:
    """Whether ``path`` matches one of the Ingress's paths (Exact, or Prefix by whole path elements)."""
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            if entry["pathType"] == "Exact" and path == entry["path"]:
                return True
            if entry["pathType"] == "Prefix" and (path == entry["path"] or path.startswith(entry["path"] + "/")):
                return True
    return False


@pytest.fixture(scope="module")
def base() -> dict[str, Resource]:
    return by_kind(render(BASE))


@pytest.fixture(scope="module")
def overlays() -> dict[str, dict[str, Resource]]:
    return {"cpu": by_kind(render(CPU)), "gpu": by_kind(render(GPU))}


def every_manifest() -> Iterator[tuple[str, Resource]]:
    for name, folder in [("base", BASE), ("cpu", CPU), ("gpu", GPU)]:
        for resource in render(folder):
            yield f"{name}:{resource['kind']}", resource
    for path in sorted(EXTRAS.glob("*.yaml")):
        for resource in load_documents(path):
            yield f"extras/{path.name}:{resource['kind']}", resource


MANIFESTS = dict(every_manifest())
CORE_MANIFESTS = {label: doc for label, doc in MANIFESTS.items() if doc["kind"] not in CUSTOM_RESOURCES}
CUSTOM_MANIFESTS = {label: doc for label, doc in MANIFESTS.items() if doc["kind"] in CUSTOM_RESOURCES}


@pytest.mark.parametrize("resource", CORE_MANIFESTS.values(), ids=CORE_MANIFESTS.keys())
def test_manifest_validates_against_the_kubernetes_schemas(resource: Resource) -> None:
    # strict: unknown fields (a misspelt key) fail too.
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("resource", CUSTOM_MANIFESTS.values(), ids=CUSTOM_MANIFESTS.keys())
def test_custom_resources_have_no_core_schema_and_are_checked_structurally_instead(resource: Resource) -> None:
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_every_kind_is_deployed() -> None:
    assert sorted({doc["kind"] for doc in MANIFESTS.values()}) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "InferenceService",
        "Ingress",
        "PodDisruptionBudget",
        "Service",
        "ServiceMonitor",
    ]


def test_container_port_is_the_images_port(base: dict[str, Resource]) -> None:
    spec = container(base["Deployment"])
    image_port = image_env()["DIGITS_PORT"]
    exposed = [i.arguments for i in dockerfile_instructions() if i.keyword == "EXPOSE"]

    assert spec["ports"] == [{"name": "http", "containerPort": int(image_port), "protocol": "TCP"}]
    assert environment(spec)["DIGITS_PORT"] == image_port
    assert exposed == [image_port]
    assert image_env()["DIGITS_HOST"] == "0.0.0.0"


def test_probes_use_the_apps_health_routes(base: dict[str, Resource]) -> None:
    spec = container(base["Deployment"])
    paths = app_paths()

    assert spec["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert spec["startupProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert {"/health/ready", "/health/live"} <= set(paths)
    # Compose's health check probes the same path.
    assert "/health/ready" in load_yaml(COMPOSE_FILE)["services"]["app"]["healthcheck"]["test"][-1]
    # Startup may take as long as compose allows it (start_period: 120s).
    assert spec["startupProbe"]["periodSeconds"] * spec["startupProbe"]["failureThreshold"] == 120


def test_environment_is_valid_settings_that_agree_with_compose(
    base: dict[str, Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(container(base["Deployment"]))
    for key in [key for key in os.environ if key.startswith("DIGITS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    settings = Settings()

    assert {f"DIGITS_{field.upper()}" for field in Settings.model_fields} >= set(env)
    assert settings.port == 8000
    assert settings.device == "cpu"
    for key in ("DIGITS_WORKERS", "DIGITS_MAX_UPLOAD_BYTES", "DIGITS_SHUTDOWN_TIMEOUT_S"):
        assert env[key] == deployed_app_environment()[key]


def test_no_service_link_variables_reach_the_settings(
    base: dict[str, Resource], overlays: dict[str, dict[str, Resource]]
) -> None:
    # A Service named "digits" would inject DIGITS_PORT=tcp://...:80, DIGITS_SERVICE_HOST and more.
    assert base["Service"]["metadata"]["name"].upper() + "_PORT" == "DIGITS_PORT"
    for resources in (base, *overlays.values()):
        assert resources["Deployment"]["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_pod_runs_as_the_images_user_without_privileges(base: dict[str, Resource]) -> None:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    spec = container(base["Deployment"])
    user = next(i.arguments for i in dockerfile_instructions() if i.keyword == "USER")

    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # The only writable path, as compose's tmpfs.
    assert [mount["mountPath"] for mount in spec["volumeMounts"]] == ["/tmp"]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]


def test_termination_grace_covers_the_drain_and_the_shutdown(base: dict[str, Resource]) -> None:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    env = environment(container(base["Deployment"]))

    drain_and_stop_s = float(env["DIGITS_SHUTDOWN_DRAIN_S"]) + float(env["DIGITS_SHUTDOWN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > drain_and_stop_s
    # Readiness turns 503 at once on SIGTERM: the endpoint must leave the Service within the drain.
    readiness = container(base["Deployment"])["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < float(env["DIGITS_SHUTDOWN_DRAIN_S"])


def test_resources_cover_the_measured_footprint(base: dict[str, Resource]) -> None:
    resources = container(base["Deployment"])["resources"]
    footprint = json.loads(FOOTPRINT.read_text())
    peak_mb = max([footprint["idle_pss_mb"], *(phase["peak_pss_mb"] for phase in footprint["phases"])])

    assert memory_mib(resources["requests"]["memory"]) >= peak_mb
    assert memory_mib(resources["limits"]["memory"]) >= memory_mib(resources["requests"]["memory"])
    assert int(resources["limits"]["cpu"]) >= int(resources["requests"]["cpu"]) >= 1
    # The footprint was measured with this replica's own settings.
    env = environment(container(base["Deployment"]))
    assert all(env[key] == value for key, value in footprint["settings"].items())


def test_service_selects_the_pods_and_targets_the_named_port(base: dict[str, Resource]) -> None:
    service, deployment = base["Service"], base["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container(deployment)["ports"]}
    for kind in ("PodDisruptionBudget",):
        assert base[kind]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert base["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert base["PodDisruptionBudget"]["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    assert base["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == deployment["spec"]["replicas"]


def test_ingress_routes_every_app_path_but_metrics_to_the_service(base: dict[str, Resource]) -> None:
    ingress, service = base["Ingress"], base["Service"]
    paths = app_paths()

    assert ingress["spec"]["ingressClassName"] == "nginx"
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            assert entry["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    assert [path for path in paths if not ingress_routes(ingress, path)] == ["/metrics"]
    assert not ingress_routes(ingress, "/metrics")


def test_ingress_limits_are_composes(base: dict[str, Resource]) -> None:
    annotations = base["Ingress"]["metadata"]["annotations"]
    rate, burst = nginx_rate_limit()

    body_limit = nginx_size_bytes(annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert body_limit == nginx_body_limit_bytes() == int(deployed_app_environment()["DIGITS_MAX_UPLOAD_BYTES"])
    assert int(annotations["nginx.ingress.kubernetes.io/limit-rps"]) == rate
    assert rate * int(annotations["nginx.ingress.kubernetes.io/limit-burst-multiplier"]) == burst


def test_overlays_name_composes_images(overlays: dict[str, dict[str, Resource]]) -> None:
    cpu_image = load_yaml(COMPOSE_FILE)["services"]["app"]["image"]
    gpu_image = load_yaml(GPU_OVERRIDE_FILE)["services"]["app"]["image"]

    assert cpu_image == "${DIGITS_IMAGE:-" + container(overlays["cpu"]["Deployment"])["image"] + "}"
    assert gpu_image == "${DIGITS_IMAGE:-" + container(overlays["gpu"]["Deployment"])["image"] + "}"


def test_gpu_overlay_changes_only_device_gpu_memory_and_tolerations(
    overlays: dict[str, dict[str, Resource]],
) -> None:
    cpu, gpu = overlays["cpu"], overlays["gpu"]
    spec = container(gpu["Deployment"])

    assert (
        environment(spec)["DIGITS_DEVICE"]
        == load_yaml(GPU_OVERRIDE_FILE)["services"]["app"]["environment"]["DIGITS_DEVICE"]
    )
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["Deployment"]["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    changed = {operation["path"] for operation in jsonpatch.make_patch(cpu["Deployment"], gpu["Deployment"])}
    container_path = "/spec/template/spec/containers/0"
    assert changed == {
        f"{container_path}/image",
        f"{container_path}/env/2/value",
        f"{container_path}/resources/limits/nvidia.com~1gpu",
        f"{container_path}/resources/limits/memory",
        f"{container_path}/resources/requests/memory",
        "/spec/template/spec/tolerations",
    }
    assert {kind: cpu[kind] for kind in cpu if kind != "Deployment"} == {
        kind: gpu[kind] for kind in gpu if kind != "Deployment"
    }


def test_queue_depth_autoscaler_scales_the_deployment_on_a_metric_the_app_exports(base: dict[str, Resource]) -> None:
    (hpa,) = load_documents(EXTRAS / "hpa-queue-depth.yaml")
    (metric,) = hpa["spec"]["metrics"]

    assert hpa["spec"]["scaleTargetRef"] == base["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert hpa["metadata"]["name"] == base["HorizontalPodAutoscaler"]["metadata"]["name"]
    assert metric["pods"]["metric"]["name"] == "digits_queue_depth"
    telemetry = Telemetry()
    telemetry.track(queue_depth=lambda: 3, preprocess_pending=lambda: 0, inflight_bytes=lambda: 0, model_versions=dict)
    assert b"\ndigits_queue_depth 3.0\n" in telemetry.render()


def test_service_monitor_scrapes_metrics_through_the_service(base: dict[str, Resource]) -> None:
    (monitor,) = load_documents(EXTRAS / "servicemonitor.yaml")
    service = base["Service"]

    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and "/metrics" in app_paths()


def test_inference_service_runs_the_image_as_the_deployment_does(overlays: dict[str, dict[str, Resource]]) -> None:
    (inference,) = load_documents(EXTRAS / "inferenceservice.yaml")
    (predictor,) = inference["spec"]["predictor"]["containers"]
    deployed = container(overlays["cpu"]["Deployment"])
    paths = app_paths()

    assert (inference["apiVersion"], inference["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert predictor["name"] == "kserve-container"
    assert predictor["image"] == deployed["image"]
    assert [port["containerPort"] for port in predictor["ports"]] == [int(image_env()["DIGITS_PORT"])]
    assert environment(predictor).items() <= environment(deployed).items()
    assert predictor["resources"] == deployed["resources"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert predictor[probe]["httpGet"]["path"] in paths
        assert predictor[probe]["httpGet"]["path"].startswith("/v2/health/")
        assert predictor[probe]["httpGet"]["port"] == int(image_env()["DIGITS_PORT"])
    assert predictor["securityContext"]["readOnlyRootFilesystem"] is True
    assert inference["spec"]["predictor"]["enableServiceLinks"] is False


def test_manifest_files_are_all_rendered_or_listed() -> None:
    listed = set(KUBERNETES.rglob("*.yaml"))
    kustomized = {
        folder / entry
        for folder in (BASE, CPU, GPU)
        for entry in (load_yaml(folder / "kustomization.yaml").get("resources", []))
        if not (folder / entry).is_dir()
    } | {GPU / "gpu.yaml", *(folder / "kustomization.yaml" for folder in (BASE, CPU, GPU))}

    assert listed - kustomized == set(EXTRAS.glob("*.yaml"))
