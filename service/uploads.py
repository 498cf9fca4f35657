"""Reads request bodies as they stream in, never holding more than the limit: the image out of a
``multipart/form-data`` upload, or a whole body (an inference request of the Open Inference Protocol).

A declared ``Content-Length`` over ``max_upload_bytes`` is refused before the body is read; otherwise bytes are
counted as they arrive and reading stops at the first chunk over the limit (413), so an oversized upload costs
at most the limit in memory and nothing on disk. The limit applies to the request body as sent. Only the first
part named ``file`` is kept; other parts are parsed and dropped. The body's bytes are reserved in the server's
byte budget (:mod:`service.inflight`) before they are read: the declared length up front, a chunked body as it
streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.errors import ClientClosedRequestError, ImageTooLargeError, MissingFileError
from service.inflight import Reservation

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

UPLOAD_FIELD = "file"


def upload_too_large(max_upload_bytes: int) -> ImageTooLargeError:
    return ImageTooLargeError(f"The upload is larger than the limit of {max_upload_bytes} bytes. Send a smaller file.")


class _FieldCollector:
    """Multipart parser callbacks that keep the data of the first part named ``field``."""

    def __init__(self, field: str) -> None:
        self._field = field.encode()
        self.data: bytearray | None = None
        self._in_field = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }

    def _on_part_begin(self) -> None:
        self._disposition = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._in_field = self.data is None and options.get(b"name") == self._field
        if self._in_field:
            self.data = bytearray()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_field and self.data is not None:
            self.data += memoryview(data)[start:end]

    def _on_part_end(self) -> None:
        self._in_field = False


def _admit_declared_body(request: Request, max_upload_bytes: int, reservation: Reservation) -> None:
    """413 for a declared ``Content-Length`` over the limit, else reserve it, all before one body byte is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_upload_bytes:
        raise upload_too_large(max_upload_bytes)
    if declared.isdigit():
        reservation.ensure(int(declared))


async def _body_chunks(request: Request, max_upload_bytes: int, reservation: Reservation) -> AsyncIterator[bytes]:
    """The body's chunks, refused with 413 past ``max_upload_bytes`` and counted in ``reservation`` as they come."""
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_upload_bytes:
                raise upload_too_large(max_upload_bytes)
            reservation.ensure(received)
            yield chunk
    except ClientDisconnect:
        raise ClientClosedRequestError() from None


async def read_body(request: Request, max_upload_bytes: int, reservation: Reservation) -> bytes:
    """The whole body, with the limits, budget and errors of :func:`read_upload` (413, 503, 499)."""
    _admit_declared_body(request, max_upload_bytes, reservation)
    return b"".join([chunk async for chunk in _body_chunks(request, max_upload_bytes, reservation)])


async def read_upload(request: Request, max_upload_bytes: int, reservation: Reservation) -> bytes:
    """The bytes of the upload's ``file`` part, the body's bytes held in ``reservation``.

    Raises :class:`ImageTooLargeError` (413) for a body over ``max_upload_bytes``, :class:`MemoryBudgetError`
    (503) when the byte budget cannot hold the body, :class:`MissingFileError`
    (422) for a body that is not multipart form data or has no ``file`` part, and
    :class:`ClientClosedRequestError` (499, logged and counted only) when the client disconnects mid-upload.
    """
    _admit_declared_body(request, max_upload_bytes, reservation)
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise MissingFileError()
    collector = _FieldCollector(UPLOAD_FIELD)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        async for chunk in _body_chunks(request, max_upload_bytes, reservation):
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise MissingFileError() from None
    if collector.data is None:
        raise MissingFileError()
    return bytes(collector.data)
