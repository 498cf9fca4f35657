"""The newest frame seen of each client's camera stream, so that a frame overtaken by a newer one is skipped.

A camera page sends frames numbered upwards under a stream id of its choosing. :meth:`FrameTracker.admit` records
a frame and says whether it is still the newest of its stream; :meth:`FrameTracker.is_current` asks again later
(after preprocessing), so work stops as soon as a newer frame has arrived. Only the ``max_streams`` most recently
seen streams are remembered (least recently used first out): an evicted stream simply starts afresh.
"""

from __future__ import annotations

from collections import OrderedDict


class FrameTracker:
    """Per stream id, the highest frame number admitted; bounded to ``max_streams`` streams (LRU)."""

    def __init__(self, max_streams: int) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be positive")
        self._max_streams = max_streams
        self._newest: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._newest)

    def admit(self, stream: str, frame: int) -> bool:
        """Record ``frame`` of ``stream``; False (and nothing recorded) when a newer frame was already admitted."""
        newest = self._newest.get(stream)
        if newest is not None and frame < newest:
            self._newest.move_to_end(stream)
            return False
        self._newest[stream] = frame
        self._newest.move_to_end(stream)
        while len(self._newest) > self._max_streams:
            self._newest.popitem(last=False)
        return True

    def is_current(self, stream: str, frame: int) -> bool:
        """Whether no frame newer than ``frame`` of ``stream`` has been admitted since."""
        newest = self._newest.get(stream)
        return newest is None or frame >= newest
