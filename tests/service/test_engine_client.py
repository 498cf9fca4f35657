"""Front ends and a real inference engine over a real Unix socket, in one event loop: shared batches, the upstream
hint, the queue bound, reload fan-out, and what a front end sees when the inference process goes and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import torch

from contract import ModelStore
from imaging.decoding import DecodeLimits
from imaging.digit import prepare_digit
from service.config import Settings
from service.engine_client import EngineClient, RemoteBatcher, RemoteRegistry
from service.engine_process import serve
from service.errors import InferenceProcessDownError, QueueFullError
from service.inference import DigitPrediction, DigitRequest
from service.registry import ModelSet
from tests.support.stand_ins import publish

pytestmark = pytest.mark.anyio

STEP_TIMEOUT_S = 10.0
# Long enough that a batch never closes on time unless a test wants it to.
NEVER_MS = 60_000.0
SELECTED = ("cnn", "lenet5", "mlp")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "engine.sock"


@asynccontextmanager
async def running_engine(settings: Settings, socket_path: Path) -> AsyncIterator[None]:
    stopping = asyncio.Event()
    task = asyncio.create_task(serve(settings, socket_path, stopping))
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while not socket_path.exists():
            await asyncio.sleep(0.01)
    try:
        yield
    finally:
        stopping.set()
        await task


@asynccontextmanager
async def front_end(socket_path: Path) -> AsyncIterator[EngineClient]:
    client = EngineClient(socket_path, reconnect_interval_s=0.01)
    await client.start(STEP_TIMEOUT_S)
    try:
        yield client
    finally:
        await client.stop()


def digit_request(digit_png: bytes) -> DigitRequest:
    digit = prepare_digit(digit_png, DecodeLimits(max_image_pixels=1_000_000))
    return DigitRequest(image=torch.from_numpy(digit.pixels), models=ModelSet(), selected=SELECTED)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.01)


async def test_items_from_two_front_ends_share_one_batch(
    settings: Settings, socket_path: Path, digit_png: bytes
) -> None:
    settings = settings.model_copy(update={"max_batch_wait_ms": NEVER_MS, "max_batch_size": 2})
    async with running_engine(settings, socket_path), front_end(socket_path) as one, front_end(socket_path) as two:
        batchers: list[RemoteBatcher[DigitRequest, DigitPrediction]] = [
            RemoteBatcher(client, "digit", settings.queue_max_size) for client in (one, two)
        ]
        # An upload still being prepared somewhere: the first item waits for the second instead of going alone.
        one.set_upstream(1)
        answers = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(digit_request(digit_png)) for batcher in batchers)), STEP_TIMEOUT_S
        )

    assert [answer.batch_size for answer in answers] == [2, 2]
    assert [[(o.name, o.version) for o in answer.outputs] for answer in answers] == [
        [(name, 1) for name in SELECTED]
    ] * 2
    assert answers[0].ensemble == answers[1].ensemble


async def test_a_lone_item_goes_at_once_when_no_upload_is_upstream(
    settings: Settings, socket_path: Path, digit_png: bytes
) -> None:
    settings = settings.model_copy(update={"max_batch_wait_ms": NEVER_MS})
    async with running_engine(settings, socket_path), front_end(socket_path) as client:
        client.set_upstream(1)
        client.set_upstream(0)
        batcher: RemoteBatcher[DigitRequest, DigitPrediction] = RemoteBatcher(client, "digit", 16)
        answer = await asyncio.wait_for(batcher.submit(digit_request(digit_png)), STEP_TIMEOUT_S)

    assert answer.batch_size == 1


async def test_more_items_than_the_engine_queue_holds_are_refused_with_503(
    settings: Settings, socket_path: Path, digit_png: bytes
) -> None:
    settings = settings.model_copy(update={"queue_max_size": 2})
    async with running_engine(settings, socket_path), front_end(socket_path) as client:
        # The front end's own bound is larger: the engine's queue is the authority.
        batcher: RemoteBatcher[DigitRequest, DigitPrediction] = RemoteBatcher(client, "digit", 100)
        with pytest.raises(QueueFullError):
            await asyncio.wait_for(batcher.submit_many([digit_request(digit_png)] * 3), STEP_TIMEOUT_S)
        fitting = await asyncio.wait_for(batcher.submit_many([digit_request(digit_png)] * 2), STEP_TIMEOUT_S)

    assert len(fitting) == 2


async def test_a_reload_from_one_front_end_updates_every_front_ends_catalog(
    settings: Settings, store: ModelStore, socket_path: Path
) -> None:
    async with running_engine(settings, socket_path), front_end(socket_path) as one, front_end(socket_path) as two:
        registries = [RemoteRegistry(one), RemoteRegistry(two)]
        assert [registry.models["mlp"].version for registry in registries] == [1, 1]
        publish(store, "mlp")
        changes = await asyncio.wait_for(registries[0].reload(), STEP_TIMEOUT_S)
        await until(lambda: registries[1].models["mlp"].version == 2)

        assert [(change.name, change.old_version, change.new_version) for change in changes] == [("mlp", 1, 2)]
        assert registries[0].models["mlp"].version == 2
        assert registries[0].device == "cpu"
        assert registries[1].statuses["mlp"].state == "serving"
        # Front ends hold manifests only: the models run in the inference process.
        with pytest.raises(RuntimeError, match="inference process"):
            registries[1].models["mlp"](torch.zeros(1, 1, 28, 28))


async def test_without_the_engine_calls_fail_with_503_and_recover_when_it_returns(
    settings: Settings, socket_path: Path, digit_png: bytes
) -> None:
    async with front_end(socket_path) as client:
        batcher: RemoteBatcher[DigitRequest, DigitPrediction] = RemoteBatcher(client, "digit", 16)
        assert not batcher.running
        with pytest.raises(InferenceProcessDownError):
            await batcher.submit(digit_request(digit_png))

        async with running_engine(settings, socket_path):
            await until(lambda: batcher.running)
            answer = await asyncio.wait_for(batcher.submit(digit_request(digit_png)), STEP_TIMEOUT_S)
        await until(lambda: not batcher.running)
        with pytest.raises(InferenceProcessDownError):
            batcher.check_intake()

    assert answer.batch_size == 1
