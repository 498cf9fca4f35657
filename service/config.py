"""The service's settings: one typed class read from ``DIGITS_*`` environment variables, units in the names."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The repository's store, found from this file so the service works from any working directory.
DEFAULT_MODEL_STORE_DIR = Path(__file__).resolve().parent.parent / "model_store"


def _split_list(value: object) -> object:
    """``"a, b"`` or a JSON list to a list of stripped, non-empty strings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _parse_versions(value: object) -> object:
    """``'{"cnn": 2}'`` (JSON) or ``"mlp=1,cnn=2"`` to ``{"mlp": 1, "cnn": 2}``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    pins: dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, version = item.partition("=")
        if not sep:
            raise ValueError(f"expected name=version, got {item.strip()!r}")
        pins[name.strip()] = version.strip()
    return pins


class Settings(BaseSettings):
    """Every setting of the service; each field is the environment variable ``DIGITS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="DIGITS_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    # None: one per core. With engine "process" every worker is a front end of the one inference process.
    workers: int | None = Field(default=None, gt=0, description="HTTP worker processes (default: one per core)")
    # process: one inference process per host holds the models and batches across all workers; embedded: each
    # worker holds its own models and batchers (replicas in one container).
    engine: Literal["process", "embedded"] = "process"
    # Set by `python -m service` for its workers: the inference process's socket. Unset: the engine runs in-process.
    engine_socket: Path | None = None
    engine_start_timeout_s: float = Field(
        default=60.0, gt=0, description="how long a starting worker waits for the inference process"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Off: the proxy in front (deploy/nginx) writes the access log and /metrics counts requests, so a second
    # line per request would only cost event-loop time.
    access_log: bool = False
    # json: one JSON object per line with the field names of the balancer's access log (deploy/nginx).
    log_format: Literal["text", "json"] = "text"
    # h11 kept overload tails short where httptools let them grow to seconds; httptools is not a dependency.
    http_implementation: Literal["h11", "httptools"] = "h11"
    # uvicorn answers 503 itself beyond this many open connections plus running requests: each open connection
    # holds up to 64 KiB of unread body in uvicorn's buffer, so 512 of them bound that memory near 32 MiB.
    limit_concurrency: int = Field(default=512, gt=0)
    # Connections the kernel queues before uvicorn accepts them; above limit_concurrency, so bursts are answered
    # (with 503 at worst) instead of timing out in the kernel.
    backlog: int = Field(default=1024, gt=0)
    shutdown_timeout_s: float = Field(default=30.0, gt=0, description="grace period for accepted requests")
    # Off by default (a stop is immediate); behind a load balancer that polls /health/ready, set it to a little more
    # than the polling period so that requests stop arriving before the listening socket closes.
    shutdown_drain_s: float = Field(
        default=0.0, ge=0, description="after SIGTERM: seconds of readiness 503 while still serving, before stopping"
    )

    model_store_dir: Path = DEFAULT_MODEL_STORE_DIR
    # Empty means every model in the store (including models published later, on reload).
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    model_versions: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    reload_interval_s: float = Field(default=0.0, ge=0, description="store polling period; 0 turns polling off")
    digit_check: bool = Field(
        default=True, description="say whether each image is one digit, when the store holds a digit check"
    )

    device: Literal["auto", "cpu", "cuda"] = "auto"
    # One intra-op thread: the event loop and the decoders need the other cores; batching supplies the throughput.
    torch_threads: int = Field(default=1, gt=0)
    autocast_fp16: bool = Field(default=False, description="float16 autocast on CUDA (ignored on CPU)")
    # 16, from the benchmark: a finished batch's responses leave the event loop in one burst, and at 64 clients
    # batches of up to 32 made that burst the digit's p99.
    max_batch_size: int = Field(default=16, gt=0)
    max_batch_wait_ms: float = Field(default=2.0, ge=0)
    queue_max_size: int = Field(default=128, gt=0)
    # One per core: the workers run beside the event loop and the inference thread, not inside their GIL.
    preprocess_workers: int = Field(
        default=2, ge=0, description="processes decoding and preprocessing uploads; 0: a thread of each worker"
    )

    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # Bytes of uploads being read or waiting to be decoded; beyond it: 503. Resident memory grew by about 0.9 bytes
    # per byte in flight (reports/reliability.json, slow_uploads), so 64 MiB keep the growth near 60 MB while
    # admitting six uploads of the largest size at once.
    max_inflight_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # A decode slower than this (a pathological file) fails with 503 and its worker is replaced; the slowest
    # legitimate upload measured (a 24-megapixel photo) takes well under a second.
    preprocess_timeout_s: float = Field(default=10.0, gt=0)
    # Refuses decompression bombs and bounds one decode near 160 MB (RGBA); admits a 24-megapixel photo.
    max_image_pixels: int = Field(default=25_000_000, gt=0)
    # /detect keeps a candidate as a number when the reader's best path probability (before the string
    # calibration) and the digit check's digit likeness of its glyphs (geometric mean) reach these; chosen together
    # on validation pages of MNIST training digits neither model trained on (reports/detection.json, "rule"):
    # printed words and clutter score below them.
    detect_min_path_probability: float = Field(default=0.25, ge=0, le=1)
    detect_min_digit_likeness: float = Field(default=0.7, ge=0, le=1)
    # Camera streams whose newest frame /detect remembers (to skip overtaken frames), least recently seen out first.
    detect_max_streams: int = Field(default=1024, gt=0)
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Unset (or empty): admin endpoints answer 404. Compared in constant time with the request's bearer token.
    admin_token: SecretStr | None = None
    # Export spans over OTLP, configured by the standard OTEL_* variables; needs the "tracing" extra.
    tracing_enabled: bool = False

    @field_validator("models", "cors_allow_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def worker_count(self) -> int:
        """``workers``, or one per core the process may run on."""
        return self.workers or len(os.sched_getaffinity(0))

    @model_validator(mode="after")
    def _budget_admits_one_upload(self) -> Settings:
        if self.max_inflight_bytes < self.max_upload_bytes:
            raise ValueError("max_inflight_bytes must be at least max_upload_bytes, or the largest upload never fits")
        return self

    @field_validator("model_versions", mode="before")
    @classmethod
    def _version_pins(cls, value: object) -> object:
        return _parse_versions(value)

    @field_validator("model_versions")
    @classmethod
    def _positive_versions(cls, value: dict[str, int]) -> dict[str, int]:
        for name, version in value.items():
            if version <= 0:
                raise ValueError(f"version of {name!r} must be a positive integer")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment, read once per process."""
    return Settings()
