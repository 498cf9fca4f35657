"""Security: request input never addresses files, errors never echo internals, containers never run as root, and
CORS is off unless configured."""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from contract import ModelStore
from harness.server import REPO_ROOT, RunningServer, start_server
from service import errors
from service.api import models as models_api
from service.api import predict as predict_api
from service.config import Settings
from service.deps import STATE_KEY
from service.main import create_app
from tests.support.admin import ADMIN
from tests.support.deploy import COMPOSE_FILE, GPU_OVERRIDE_FILE, dockerfile_instructions, load_yaml
from tests.support.servers import server_env
from tests.support.stand_ins import publish
from tests.support.uploads import upload

TIMEOUT_S = 10.0
INTERNAL = errors.ServiceError.default_detail


class OpenedFiles:
    """Records the paths the process opens while active, in any thread, from the interpreter's ``open`` audit
    events (the hook stays for the life of the process: audit hooks cannot be removed)."""

    _active: list[list[str]] = []
    _installed = False

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and cls._active and isinstance(args[0], str | bytes | os.PathLike):
            cls._active[-1].append(os.fsdecode(args[0]))

    @classmethod
    @contextmanager
    def recorded(cls) -> Iterator[list[str]]:
        """The opened paths, less the interpreter's own (lazy imports, and frameworks reading loaded modules'
        source for their error context)."""
        if not cls._installed:
            sys.addaudithook(cls._hook)
            cls._installed = True
        opened: list[str] = []
        cls._active.append(opened)
        try:
            yield opened
        finally:
            cls._active.remove(opened)
            sources = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
            opened[:] = [p for p in opened if p not in sources and not p.startswith((sys.prefix, sys.base_prefix))]


@pytest.fixture
def decoy(tmp_path: Path) -> Path:
    """A well-formed model store entry outside the store, where a path from a request might try to reach it."""
    outside = ModelStore(tmp_path / "outside")
    publish(outside, "mlp")
    return outside.version_dir("mlp", 1)


# As the route receives them, decoded (encoded forms, decoded once by the server, are in RAW_PATHS below).
HOSTILE_NAMES = [
    "..",
    "../outside/mlp",
    "../../etc/passwd",
    "/etc/passwd",
    "..\\..\\etc\\passwd",
    "mlp\x00",
    "mlp\x00/../../outside",
]


def percent_encoded(name: str) -> str:
    """Every byte encoded, dots included: the client sends the name as one segment and removes no dot segment."""
    return "".join(f"%{byte:02X}" for byte in name.encode())


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "decoy"], ids=repr)
def test_names_from_requests_never_open_a_file(client: TestClient, decoy: Path, name: str) -> None:
    name = str(decoy) if name == "decoy" else name
    with OpenedFiles.recorded() as opened:
        by_name = client.get(f"/models/{percent_encoded(name)}")
        predict = client.post("/predict", params={"models": f"cnn,{name}"}, files=upload(b"never read"))
        asset = client.get(f"/static/{percent_encoded(name)}")
        protocol = [
            client.get(f"/v2/models/{percent_encoded(name)}"),
            client.get(f"/v2/models/cnn/versions/{percent_encoded(name)}"),
            client.post(f"/v2/models/{percent_encoded(name)}/infer", content=b"never read"),
        ]

    assert [response.status_code for response in protocol] == [404, 404, 404]
    assert all(str(decoy) not in response.text for response in protocol)
    assert by_name.status_code == 404
    assert predict.status_code == 422
    assert predict.json() == {"detail": errors.UnknownModelError.default_detail}
    assert asset.status_code == 404
    assert opened == []
    assert str(decoy) not in by_name.text + predict.text + asset.text


@pytest.fixture(scope="module")
def server(pristine_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(server_env(pristine_store), tmp_path_factory.mktemp("security") / "server.log")
    yield running
    running.stop()


RAW_PATHS = [
    "/models/..",
    "/models/../../../../etc/passwd",
    "/models//etc/passwd",
    "/models/..%2f..%2f..%2fetc%2fpasswd",
    "/models/%2e%2e%2f%2e%2e%2fservice%2fconfig.py",
    "/models/mlp%00",
    "/static/../config.py",
    "/static/..%2fconfig.py",
    "/static/%2e%2e%2fconfig.py",
    "/static/%2e%2e",
    "/static/index.html%00.js",
    "/static//etc/passwd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
]


@pytest.mark.parametrize("path", RAW_PATHS)
def test_traversal_paths_sent_verbatim_are_not_found(server: RunningServer, path: str) -> None:
    # http.client sends the path as given; httpx would remove the dot segments before sending.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read().decode(errors="replace")
    connection.close()

    assert response.status == 404
    assert "root:" not in body
    assert "class Settings" not in body
    assert str(REPO_ROOT) not in body


def assert_no_internals(text: str, *secrets: str) -> None:
    for marker in ("Traceback", 'File "', "Error:", str(REPO_ROOT), sys.prefix, *secrets):
        assert marker not in text


SECRET = "/srv/secret/internal-path.pt"


def fail(*_args: object, **_kwargs: object) -> Any:
    raise RuntimeError(f"unexpected failure reading {SECRET}")


def test_forced_internal_failures_are_a_json_500_without_internals(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, digit_png: bytes
) -> None:
    monkeypatch.setattr(predict_api, "_to_response", fail)
    monkeypatch.setattr(models_api, "_models_response", fail)

    with TestClient(app, raise_server_exceptions=False) as client:
        monkeypatch.setattr(client.app_state[STATE_KEY].registry, "refresh", fail)
        responses = [
            client.post("/predict", files=upload(digit_png)),
            client.get("/models"),
            client.post("/models/reload", headers=ADMIN),
        ]
        ready = client.get("/health/ready")

    for response in responses:
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"detail": INTERNAL}
        assert_no_internals(response.text, SECRET, "RuntimeError")
    assert ready.status_code == 200


def test_error_answers_of_every_endpoint_carry_no_internals(client: TestClient, store: ModelStore) -> None:
    responses = [
        client.post("/predict", files=upload(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)),
        client.post("/predict", files=upload(b"%PDF-1.4")),
        client.post("/predict", files=upload(bytes(300 * 1024))),
        client.post("/predict", params={"debug": "maybe"}, files=upload(b"x")),
        client.post("/predict", content=b"not multipart", headers={"Content-Type": "text/plain"}),
        client.get("/models/resnet"),
        client.get("/models/%00"),
        client.put("/models/reload"),
        client.delete("/predict"),
        client.get("/nowhere"),
        client.get("/static/nothing.js"),
    ]

    for response in responses:
        assert 400 <= response.status_code < 500
        assert set(response.json()) == {"detail"}
        assert_no_internals(response.text, str(store.root))


# -- containers ----------------------------------------------------------------------------------------------


def _runs_as_root(user: str) -> bool:
    name = user.partition(":")[0].strip().strip("\"'")
    return name in {"", "0", "root"}


def _final_user(dockerfile: Path) -> str:
    instructions = dockerfile_instructions(dockerfile)
    final_stage = instructions[-1].stage
    users = [i.arguments for i in instructions if i.keyword == "USER" and i.stage == final_stage]
    return users[-1] if users else ""


@pytest.mark.parametrize("dockerfile", sorted(REPO_ROOT.glob("Dockerfile*")), ids=lambda path: path.name)
def test_every_image_runs_as_a_non_root_user(dockerfile: Path) -> None:
    assert not _runs_as_root(_final_user(dockerfile))


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """An override file applied as Compose does for the keys read here: mappings merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both_mappings else value
    return merged


@pytest.mark.parametrize("compose_files", [[COMPOSE_FILE], [COMPOSE_FILE, GPU_OVERRIDE_FILE]], ids=["cpu", "gpu"])
def test_every_compose_container_runs_as_a_non_root_user(compose_files: list[Path]) -> None:
    configuration: dict[str, Any] = {}
    for path in compose_files:
        configuration = _merged(configuration, load_yaml(path))

    for name, service in configuration["services"].items():
        if "user" in service:
            user = str(service["user"])
        else:
            build = service.get("build")
            assert build is not None, f"{name}: an image of unknown user needs a 'user:' in compose"
            user = _final_user(REPO_ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile"))
        assert not _runs_as_root(user), name


# -- CORS ----------------------------------------------------------------------------------------------------

ORIGIN = "https://digits.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


def test_cross_origin_upload_is_not_allowed_by_default(client: TestClient, digit_png: bytes) -> None:
    preflight = client.options("/predict", headers=PREFLIGHT)
    upload_response = client.post("/predict", headers={"Origin": ORIGIN}, files=upload(digit_png))
    refused = client.post("/predict", headers={"Origin": ORIGIN}, files=upload(b"%PDF"))

    assert preflight.status_code == 405
    for response in (preflight, upload_response, refused):
        assert not any(header.startswith("access-control-") for header in response.headers)


def test_cross_origin_upload_is_allowed_for_a_configured_origin_only(settings: Settings) -> None:
    configured = settings.model_copy(update={"cors_allow_origins": [ORIGIN]})

    with TestClient(create_app(configured)) as client:
        preflight = client.options("/predict", headers=PREFLIGHT)
        other_preflight = client.options("/predict", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        refused = client.post("/predict", headers={"Origin": ORIGIN}, files=upload(b"%PDF"))

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in preflight.headers
    assert other_preflight.status_code == 400
    assert "access-control-allow-origin" not in other_preflight.headers
    # Error answers carry the header too, so the page can show the reason.
    assert refused.status_code == 415
    assert refused.headers["access-control-allow-origin"] == ORIGIN
