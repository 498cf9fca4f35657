"""Reading the upload from the request stream: the right part, the byte limit and the byte budget enforced while
streaming."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from starlette.requests import Request
from starlette.types import Message

from service.errors import ClientClosedRequestError, ImageTooLargeError, MemoryBudgetError, MissingFileError
from service.inflight import ByteBudget, Reservation
from service.uploads import read_upload

pytestmark = pytest.mark.anyio

BOUNDARY = "testboundary"
LIMIT_BYTES = 10_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unbounded() -> Reservation:
    """A reservation in a budget no test body reaches."""
    return Reservation(ByteBudget(100 * LIMIT_BYTES))


def part(name: str, data: bytes, filename: str | None = "x.png") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class StreamedRequest:
    """A request whose body arrives in the given chunks; counts how many the reader pulled."""

    def __init__(
        self, chunks: Sequence[bytes], *, content_length: int | None = None, disconnects: bool = False
    ) -> None:
        self.chunks = list(chunks)
        self.disconnects = disconnects
        self.pulled = 0
        headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        self.request = Request({"type": "http", "method": "POST", "headers": headers}, self.receive)

    async def receive(self) -> Message:
        if self.pulled == len(self.chunks):
            return {"type": "http.disconnect"}
        self.pulled += 1
        more = self.pulled < len(self.chunks) or self.disconnects

        return {"type": "http.request", "body": self.chunks[self.pulled - 1], "more_body": more}


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_returns_the_file_part_among_other_fields() -> None:
    body = multipart(part("note", b"hello", filename=None), part("file", b"IMAGE-BYTES"), part("file", b"second"))
    streamed = StreamedRequest(chunked(body, 7))

    assert await read_upload(streamed.request, LIMIT_BYTES, unbounded()) == b"IMAGE-BYTES"


async def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    streamed = StreamedRequest([multipart(part("file", b"x"))], content_length=LIMIT_BYTES + 1)

    with pytest.raises(ImageTooLargeError):
        await read_upload(streamed.request, LIMIT_BYTES, unbounded())
    assert streamed.pulled == 0


async def test_stream_over_the_limit_is_refused_at_the_first_chunk_past_it() -> None:
    chunks = chunked(multipart(part("file", bytes(5 * LIMIT_BYTES))), 1000)
    streamed = StreamedRequest(chunks)

    with pytest.raises(ImageTooLargeError, match=f"larger than the limit of {LIMIT_BYTES} bytes"):
        await read_upload(streamed.request, LIMIT_BYTES, unbounded())
    assert streamed.pulled == LIMIT_BYTES // 1000 + 1


@pytest.mark.parametrize(
    "body",
    [multipart(part("image", b"x")), b"garbage without any boundary", b""],
    ids=["other-field", "no-parts", "empty"],
)
async def test_body_without_a_file_part_is_missing_file(body: bytes) -> None:
    with pytest.raises(MissingFileError):
        await read_upload(StreamedRequest([body]).request, LIMIT_BYTES, unbounded())


async def test_client_gone_mid_upload_is_client_closed_request() -> None:
    head = multipart(part("file", bytes(100)))[:60]

    with pytest.raises(ClientClosedRequestError):
        await read_upload(StreamedRequest([head], disconnects=True).request, LIMIT_BYTES, unbounded())


async def test_declared_length_over_the_budget_is_refused_before_reading() -> None:
    budget = ByteBudget(LIMIT_BYTES)
    streamed = StreamedRequest([multipart(part("file", b"x"))], content_length=LIMIT_BYTES // 2)

    with budget.reserve() as other, budget.reserve() as this:
        other.ensure(LIMIT_BYTES // 2 + 1)
        with pytest.raises(MemoryBudgetError):
            await read_upload(streamed.request, LIMIT_BYTES, this)
        assert this.bytes == 0
    assert streamed.pulled == 0
    assert budget.in_use_bytes == 0


async def test_chunked_body_is_counted_as_it_streams_and_refused_past_the_budget() -> None:
    budget = ByteBudget(LIMIT_BYTES)
    chunks = chunked(multipart(part("file", bytes(LIMIT_BYTES // 2))), 1000)

    refused = StreamedRequest(chunks)
    with budget.reserve() as other, budget.reserve() as this:
        other.ensure(LIMIT_BYTES * 3 // 4)
        with pytest.raises(MemoryBudgetError):
            await read_upload(refused.request, LIMIT_BYTES, this)
    with budget.reserve() as alone:
        data = await read_upload(StreamedRequest(chunks).request, LIMIT_BYTES, alone)
        held = budget.in_use_bytes

    assert refused.pulled == LIMIT_BYTES // 4 // 1000 + 1
    assert data == bytes(LIMIT_BYTES // 2)
    assert held == sum(map(len, chunks))
    assert budget.in_use_bytes == 0
