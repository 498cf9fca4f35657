"""The compose files follow the Compose Specification and describe the intended topology.

Replicas of the app behind one published load balancer, the store read-only, health-gated start-up, and a GPU
override that changes only the build variant, the device and the GPU reservation.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from harness.server import REPO_ROOT
from tests.support.deploy import (
    COMPOSE_FILE,
    DOCKERFILE,
    GPU_OVERRIDE_FILE,
    NGINX_CONF,
    UPSTREAM_CONF,
    dockerfile_instructions,
    exec_form,
    image_env,
    load_yaml,
    nginx_body_limit_bytes,
)

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
_DURATION_RE = re.compile(r"^(?:(\d+)m)?(?:(\d+)s)?$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def gpu_override() -> dict[str, Any]:
    return load_yaml(GPU_OVERRIDE_FILE)


def _seconds(duration: str) -> int:
    match = _DURATION_RE.match(duration)
    if match is None or not duration:
        raise ValueError(f"unsupported compose duration {duration!r}")
    minutes, seconds = (int(part or 0) for part in match.groups())
    return minutes * 60 + seconds


def _bind_mounts(service: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    """A service's bind mounts by their source, as a path inside the repository."""
    return {
        (REPO_ROOT / volume["source"]).resolve().relative_to(REPO_ROOT): volume
        for volume in service.get("volumes", [])
        if volume["type"] == "bind"
    }


def _tmpfs_targets(service: dict[str, Any]) -> set[str]:
    return {volume["target"] for volume in service.get("volumes", []) if volume["type"] == "tmpfs"}


@pytest.mark.parametrize("path", [COMPOSE_FILE, GPU_OVERRIDE_FILE], ids=lambda path: path.name)
def test_compose_file_validates_against_the_compose_specification(path: Path) -> None:
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_app_runs_two_replicas_by_default(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]

    assert app["deploy"]["replicas"] == 2
    # A fixed container name would make --scale impossible.
    assert "container_name" not in app


def test_only_the_load_balancer_is_published(compose: dict[str, Any]) -> None:
    published = {name: service["ports"] for name, service in compose["services"].items() if "ports" in service}

    assert published == {"lb": ["${DIGITS_LB_PORT:-8080}:8080"]}


def test_model_store_is_mounted_read_only_over_the_image_copy(compose: dict[str, Any]) -> None:
    store = _bind_mounts(compose["services"]["app"])[Path("model_store")]

    assert store["read_only"] is True
    assert store["target"] == image_env()["DIGITS_MODEL_STORE_DIR"]


def test_app_healthcheck_is_the_image_readiness_probe(compose: dict[str, Any]) -> None:
    healthcheck = compose["services"]["app"]["healthcheck"]
    image_probe = next(i for i in dockerfile_instructions() if i.keyword == "HEALTHCHECK")

    assert healthcheck["test"][0] == "CMD"
    assert healthcheck["test"][1:] == exec_form(image_probe.arguments)
    assert "/health/ready" in healthcheck["test"][-1]


def test_load_balancer_starts_once_the_replicas_are_healthy(compose: dict[str, Any]) -> None:
    assert compose["services"]["lb"]["depends_on"] == {"app": {"condition": "service_healthy"}}


@pytest.mark.parametrize("name", ["app", "lb"])
def test_services_restart_and_run_without_privileges(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]

    assert service["restart"] == "unless-stopped"
    assert service["deploy"]["restart_policy"]["condition"] == "any"
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert _tmpfs_targets(service) == {"/tmp"}


def test_containers_run_as_non_root_users(compose: dict[str, Any]) -> None:
    services = compose["services"]
    image_user = [i.arguments for i in dockerfile_instructions() if i.keyword == "USER"][-1]

    # The app keeps the image's user; nginx's image would start as root, so compose names its nginx user.
    assert "user" not in services["app"]
    assert int(image_user.split(":")[0]) > 0
    assert int(services["lb"]["user"].split(":")[0]) > 0


def test_app_gets_longer_to_stop_than_its_graceful_shutdown(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]

    shutdown_timeout_s = float(app["environment"]["DIGITS_SHUTDOWN_TIMEOUT_S"])

    assert app["stop_signal"] == "SIGTERM"
    assert _seconds(app["stop_grace_period"]) > shutdown_timeout_s


def test_nginx_body_limit_is_the_service_upload_limit(compose: dict[str, Any]) -> None:
    # Both count the request body as sent, so equal limits refuse exactly the same requests.
    assert nginx_body_limit_bytes() == int(compose["services"]["app"]["environment"]["DIGITS_MAX_UPLOAD_BYTES"])


def test_load_balancer_reads_the_mounted_nginx_configuration(compose: dict[str, Any]) -> None:
    lb = compose["services"]["lb"]
    command = lb["command"]
    mounts = _bind_mounts(lb)

    conf_target = PurePosixPath(mounts[NGINX_CONF.relative_to(REPO_ROOT)]["target"])
    upstream_target = PurePosixPath(mounts[UPSTREAM_CONF.relative_to(REPO_ROOT)]["target"])

    assert command[command.index("-c") + 1] == str(conf_target)
    # nginx.conf includes upstream.conf by a path relative to its own folder.
    assert upstream_target == conf_target.parent / UPSTREAM_CONF.name
    assert all(mount["read_only"] for mount in mounts.values())
    # The prefix holds the pid file and temporary files: it must be the writable tmpfs.
    assert command[command.index("-p") + 1].rstrip("/") in _tmpfs_targets(lb)


def test_cpu_is_the_default_build_and_the_gpu_override_switches_to_cuda(
    compose: dict[str, Any], gpu_override: dict[str, Any]
) -> None:
    base_app = compose["services"]["app"]
    gpu_app = gpu_override["services"]["app"]

    assert base_app["build"]["dockerfile"] == DOCKERFILE.name
    assert base_app["build"]["args"] == {"TORCH_VARIANT": "cpu"}
    assert gpu_app["build"]["args"] == {"TORCH_VARIANT": "cu130"}
    assert gpu_app["environment"] == {"DIGITS_DEVICE": "cuda"}
    assert gpu_app["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert set(gpu_override["services"]) == {"app"}
