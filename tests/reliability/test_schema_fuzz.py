"""Schemathesis against the app's own ``/openapi.json``: every endpoint, every check, generated requests, sent to a
real uvicorn process.

Every check runs with its defaults but one: ``positive_data_acceptance`` expects 2xx for any schema-valid request,
and to the schema any bytes are a valid ``format: binary`` upload, while the service rightly refuses bytes that are
not an image with a digit (400, 413, 415, 422). For ``/predict`` that check accepts exactly those documented
refusals, so it still fails on a 5xx, an undocumented status or a 401/403/404. The Open Inference Protocol's
``infer`` routes are alike: a schema-valid request names random models and tensors (400, 404, 413, 415, 422).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case

from harness.server import RunningServer, start_server
from service.main import create_app
from tests.support import images
from tests.support.servers import clean_settings, server_env

CONFIG = schemathesis.Config.from_dict(
    {
        # Nothing written into the working tree: no failure cache, no example database.
        "cache": {"enabled": False},
        # About 130 requests to /predict and 100 to /models/{name}; the parameterless routes need few.
        "generation": {"max-examples": 100, "database": "none"},
        "operations": [
            {
                "include-path": "/predict",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["200", "400", "413", "415", "422"]}},
            },
            {
                "include-path-regex": "^/v2/models/.*/infer$",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["200", "400", "404", "413", "415", "422"]}
                },
            },
        ],
    }
)
# The document is the same for every store, so it is read from an app that never starts (no I/O at collection).
schema = schemathesis.openapi.from_dict(create_app(clean_settings()).openapi(), config=CONFIG)

# Random bytes alone never decode, so the 200 answer's schema would never be checked: uploads are drawn from real
# digit images in every accepted format as well as from random bytes.
DIGITS = [
    images.encode(images.seven().convert(mode), image_format)
    for mode, image_format in [
        ("L", "PNG"),
        ("RGB", "JPEG"),
        ("P", "GIF"),
        ("RGB", "WEBP"),
        ("L", "BMP"),
        ("L", "TIFF"),
    ]
]
schemathesis.openapi.format("binary", st.one_of(st.sampled_from(DIGITS), st.binary(max_size=4096)))


@schema.hook
def flatmap_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    """A generated ``models`` name is almost never a served model (422 before the upload is read): keep it, drop it
    or name served models, in equal shares, so that uploads reach the decoder too."""
    if context.operation is None or context.operation.path != "/predict" or not query or "models" not in query:
        return st.just(query)
    rest = {key: value for key, value in query.items() if key != "models"}
    return st.sampled_from([query, rest, {**rest, "models": "cnn,mlp"}])


@pytest.fixture(scope="module")
def server(pristine_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The server under fuzzing; it must serve the very document the cases came from, and log no traceback."""
    running = start_server(server_env(pristine_store), tmp_path_factory.mktemp("fuzz") / "server.log")
    assert httpx.get(f"{running.url}/openapi.json").json() == schema.raw_schema
    yield running
    running.stop()
    assert "Traceback" not in running.log()


@schema.parametrize()
def test_every_endpoint_conforms_to_its_schema(case: Case[Any], server: RunningServer) -> None:
    case.call_and_validate(base_url=server.url)
