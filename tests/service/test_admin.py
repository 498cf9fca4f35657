"""Admin endpoints behind ``DIGITS_ADMIN_TOKEN``: 404 when unset, 401 without a bearer token, 403 with another one,
the token compared in constant time; predictions never need it."""

from __future__ import annotations

import hmac

import pytest
from fastapi.testclient import TestClient

from service import admin, errors
from service.config import Settings
from service.main import create_app
from tests.support.admin import ADMIN, ADMIN_TOKEN
from tests.support.uploads import upload


def test_admin_endpoint_returns_404_when_no_token_is_set(settings: Settings, digit_png: bytes) -> None:
    with TestClient(create_app(settings.model_copy(update={"admin_token": None}))) as client:
        response = client.post("/models/reload", headers=ADMIN)
        prediction = client.post("/predict", files=upload(digit_png))

    assert response.status_code == 404
    assert response.json() == {"detail": errors.AdminDisabledError.default_detail}
    assert prediction.status_code == 200


def test_empty_token_setting_disables_admin_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_ADMIN_TOKEN", " ")

    assert Settings().admin_token is None


@pytest.mark.parametrize("authorization", [None, "Basic YWRtaW46YWRtaW4=", "Bearer"], ids=["none", "basic", "empty"])
def test_admin_endpoint_without_a_bearer_token_returns_401(client: TestClient, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = client.post("/models/reload", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": errors.AdminTokenMissingError.default_detail}


@pytest.mark.parametrize(
    "token", [b"wrong", (ADMIN_TOKEN + "x").encode(), ADMIN_TOKEN[:-1].encode(), "tëst".encode("latin-1")]
)
def test_admin_endpoint_with_another_token_returns_403(client: TestClient, token: bytes) -> None:
    response = client.post("/models/reload", headers={"Authorization": b"Bearer " + token})

    assert response.status_code == 403
    assert response.json() == {"detail": errors.AdminTokenInvalidError.default_detail}


def test_admin_token_is_compared_in_constant_time(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(admin.hmac, "compare_digest", spy)
    refused = client.post("/models/reload", headers={"Authorization": "Bearer wrong"})
    accepted = client.post("/models/reload", headers=ADMIN)

    assert (refused.status_code, accepted.status_code) == (403, 200)
    assert compared == [(b"wrong", ADMIN_TOKEN.encode()), (ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode())]


def test_openapi_documents_the_bearer_scheme_on_admin_endpoints_only(client: TestClient) -> None:
    openapi = client.get("/openapi.json").json()

    assert openapi["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    secured = {
        (path, method)
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    }
    assert secured == {("/models/reload", "post")}
