"""Schemathesis against the app's own ``/openapi.json``: every endpoint, every check, generated requests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case

from service.main import create_app
from tests.reliability.conftest import clean_settings, server_env
from tests.service import images
from tests.support.server import RunningServer, start_server

STATUSES: Counter[tuple[str, int, bool]] = Counter()

CONFIG = schemathesis.Config.from_dict(
    {
        "cache": {"enabled": False},
        "generation": {"max-examples": 100, "database": "none"},
        "operations": [
            {
                "include-path": "/predict",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["200", "400", "413", "415", "422"]}},
            }
        ],
    }
)
# The document is the same for every store, so it is read from an app that never starts (no I/O at collection).
schema = schemathesis.openapi.from_dict(create_app(clean_settings()).openapi(), config=CONFIG)

DIGITS = [
    images.encode(images.seven().convert(mode), fmt)
    for mode, fmt in [("L", "PNG"), ("RGB", "JPEG"), ("P", "GIF"), ("RGB", "WEBP"), ("L", "BMP"), ("L", "TIFF")]
]
schemathesis.openapi.format("binary", st.one_of(st.sampled_from(DIGITS), st.binary(max_size=4096)))


@schema.hook
def flatmap_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    if context.operation is None or context.operation.path != "/predict" or not query or "models" not in query:
        return st.just(query)
    rest = {key: value for key, value in query.items() if key != "models"}
    return st.sampled_from([query, rest, {**rest, "models": "cnn,mlp"}])


@pytest.fixture(scope="module")
def server(pristine_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        server_env(pristine_store, max_upload_bytes=64 * 1024), tmp_path_factory.mktemp("fuzz") / "server.log"
    )
    try:
        assert httpx.get(f"{running.url}/openapi.json").json() == schema.raw_schema
        yield running
    finally:
        running.stop()
        print(sorted(STATUSES.items()))


@schema.parametrize()
def test_every_endpoint_conforms_to_its_schema(case: Case, server: RunningServer) -> None:
    r = case.call_and_validate(base_url=server.url)
    STATUSES[(case.path, r.status_code, bool(case.query and "models" in case.query))] += 1
