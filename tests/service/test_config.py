"""Settings from ``DIGITS_*`` environment variables: list and pin formats, constraints and defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import DEFAULT_MODEL_STORE_DIR, Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    settings = Settings()

    assert (settings.host, settings.port, settings.device) == ("127.0.0.1", 8000, "auto")
    assert settings.models == []
    assert settings.model_versions == {}
    assert settings.cors_allow_origins == []
    assert settings.reload_interval_s == 0


def test_default_store_is_the_repository_folder_whatever_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)

    assert Settings().model_store_dir == DEFAULT_MODEL_STORE_DIR == REPO_ROOT / "model_store"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("mlp, cnn", ["mlp", "cnn"]), ('["lenet5"]', ["lenet5"]), ("", [])],
)
def test_models_from_a_comma_list_or_json(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]) -> None:
    monkeypatch.setenv("DIGITS_MODELS", value)

    assert Settings().models == expected


@pytest.mark.parametrize("value", ['{"cnn": 2, "mlp": 1}', "cnn=2, mlp=1"])
def test_pinned_versions_from_json_or_pairs(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DIGITS_MODEL_VERSIONS", value)

    assert Settings().model_versions == {"cnn": 2, "mlp": 1}


@pytest.mark.parametrize("value", ["cnn", "cnn=two", "cnn=0", '{"cnn": -1}'])
def test_invalid_pins_are_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DIGITS_MODEL_VERSIONS", value)

    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGITS_MAX_BATCH_SIZE", "0"),
        ("DIGITS_QUEUE_MAX_SIZE", "-1"),
        ("DIGITS_MAX_UPLOAD_BYTES", "0"),
        ("DIGITS_DEVICE", "tpu"),
        ("DIGITS_PORT", "70000"),
    ],
)
def test_out_of_range_values_are_rejected(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError):
        Settings()


def test_cors_origins_from_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_CORS_ALLOW_ORIGINS", "https://a.example, https://b.example")

    assert Settings().cors_allow_origins == ["https://a.example", "https://b.example"]


def test_get_settings_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("DIGITS_PORT", "9001")
    first = get_settings()
    monkeypatch.setenv("DIGITS_PORT", "9002")

    assert get_settings() is first
    assert first.port == 9001
    get_settings.cache_clear()
    assert "DIGITS_PORT" in os.environ


def test_operations_defaults() -> None:
    settings = Settings()

    assert settings.admin_token is None
    assert (settings.log_format, settings.tracing_enabled) == ("text", False)
    assert (settings.max_inflight_bytes, settings.preprocess_timeout_s) == (64 * 1024 * 1024, 10.0)
    assert (settings.limit_concurrency, settings.backlog) == (512, 1024)


def test_budget_below_one_upload_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_MAX_UPLOAD_BYTES", "2000")
    monkeypatch.setenv("DIGITS_MAX_INFLIGHT_BYTES", "1999")

    with pytest.raises(ValidationError, match="max_inflight_bytes must be at least max_upload_bytes"):
        Settings()


def test_admin_token_is_secret_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_ADMIN_TOKEN", "s3cret-token")

    settings = Settings()

    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "s3cret-token"
    assert "s3cret-token" not in repr(settings)
