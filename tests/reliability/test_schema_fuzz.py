"""Schemathesis against the app's own ``/openapi.json``: every endpoint, every check with its defaults, no
exclusions, generated requests sent to a real uvicorn process that has an admin token (Schemathesis sends it).

``positive_data_acceptance`` expects 2xx for every schema-valid request, so valid uploads are real digit images in
every accepted format, and a valid ``models`` query names served models; random bytes and unknown names are the
negative cases, which must be refused with a 4xx.
"""

from __future__ import annotations

import shutil
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
from tests.support.servers import COMMITTED_STORE, clean_settings, record_figures, server_env

ADMIN_TOKEN = "fuzz-admin-token"
CONFIG = schemathesis.Config.from_dict(
    {
        # Nothing written into the working tree: no failure cache, no example database.
        "cache": {"enabled": False},
        "generation": {"max-examples": 100, "database": "none"},
        "auth": {"openapi": {"HTTPBearer": {"bearer": ADMIN_TOKEN}}},
    }
)
# Requests sent, for the reliability report.
SENT: list[int] = []
# The document is the same for every store, so it is read from an app that never starts (no I/O at collection).
schema = schemathesis.openapi.from_dict(create_app(clean_settings()).openapi(), config=CONFIG)

# Any bytes match ``format: binary``, but only an image with a digit is a valid upload: generated uploads are real
# digit images in every accepted format (random bytes and corrupt files are tests/reliability/test_bad_uploads.py's).
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
schemathesis.openapi.format("binary", st.sampled_from(DIGITS))


@schema.hook
def flatmap_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    """A generated ``models`` string is almost never a list of served models, which the schema cannot state (they
    change on reload): a valid query drops it or names served models."""
    if context.operation is None or context.operation.path != "/predict" or not query or "models" not in query:
        return st.just(query)
    rest = {key: value for key, value in query.items() if key != "models"}
    return st.sampled_from([rest, {**rest, "models": "cnn,mlp"}, {**rest, "models": "lenet5"}])


@pytest.fixture(scope="module")
def server(pristine_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The server under fuzzing (the stand-in digit models and the committed line reader, so ``/read`` answers
    too); it must serve the very document the cases came from, and log no traceback."""
    folder = tmp_path_factory.mktemp("fuzz")
    store = Path(shutil.copytree(pristine_store, folder / "store"))
    shutil.copytree(COMMITTED_STORE / "reader", store / "reader")
    running = start_server(server_env(store, admin_token=ADMIN_TOKEN), folder / "server.log")
    assert httpx.get(f"{running.url}/openapi.json").json() == schema.raw_schema
    yield running
    running.stop()
    record_figures("schema_fuzz", {"requests": len(SENT)})
    assert "Traceback" not in running.log()


@schema.parametrize()
def test_every_endpoint_conforms_to_its_schema(case: Case[Any], server: RunningServer) -> None:
    SENT.append(1)
    case.call_and_validate(base_url=server.url)
