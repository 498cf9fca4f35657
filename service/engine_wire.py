"""The wire between the HTTP front ends and the inference process: pickled messages, each behind a 4-byte length,
over one Unix socket connection per front end.

Both ends are processes of one service started together, and the socket lives in a directory only the service's
user can open, so pickle carries the requests and results as the dataclasses they are (no schema to keep in step).
A front end sends :class:`Submit`, :class:`Reload`, :class:`FrameCheck` and :class:`Upstream`; the inference
process answers each call with one :class:`Answer` and sends a :class:`Catalog` on connect and whenever the served
models change.
"""

from __future__ import annotations

import asyncio
import io
import pickle
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from service.registry import ModelStatus

_LENGTH = struct.Struct("!I")

Kind = Literal["digit", "line"]


@dataclass(frozen=True)
class Submit:
    """Items for the ``kind`` batcher; each item's ``models`` is filled in by the inference process."""

    call_id: int
    kind: Kind
    items: Sequence[object]


@dataclass(frozen=True)
class Reload:
    """Refresh the registry from the store now (the admin endpoint)."""

    call_id: int


@dataclass(frozen=True)
class FrameCheck:
    """Is ``frame`` still the newest of camera ``stream``? With ``admit``, also record it (see ``service.frames``)."""

    call_id: int
    stream: str
    frame: int
    admit: bool


@dataclass(frozen=True)
class Upstream:
    """How many uploads this front end is reading or preparing: while any is, a batch may wait for company."""

    count: int


@dataclass(frozen=True)
class Answer:
    """A call's results, or the service error it failed with; and the queue depth, for the front end's intake check."""

    call_id: int
    results: object
    error: Exception | None
    queue_depth: int


@dataclass(frozen=True)
class Catalog:
    """What is served: the device and each configured model's status, with manifests but no modules."""

    device: str
    statuses: Mapping[str, ModelStatus]


Message = Submit | Reload | FrameCheck | Upstream | Answer | Catalog


class _Pickler(pickle.Pickler):
    """Pickles CPU tensors as NumPy arrays: a tensor's own pickling costs many times more, for every digit."""

    def reducer_override(self, obj: object) -> Any:
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu" and not obj.requires_grad:
            return torch.from_numpy, (obj.numpy(),)
        return NotImplemented


def encode(message: Message) -> bytes:
    """``message`` framed for the stream: its pickled length, then the pickle."""
    buffer = io.BytesIO()
    buffer.write(bytes(_LENGTH.size))
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(message)
    payload = buffer.getbuffer()
    _LENGTH.pack_into(payload, 0, len(payload) - _LENGTH.size)
    return payload.tobytes()


async def read_message(reader: asyncio.StreamReader) -> Message:
    """The next message; :class:`asyncio.IncompleteReadError` when the other end has gone."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    message: Message = pickle.loads(await reader.readexactly(length))
    return message
