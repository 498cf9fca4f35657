"""The per-stream frame tracker behind ``/detect``'s stale-frame refusal: newest frame wins, bounded by LRU."""

from __future__ import annotations

import pytest

from service.frames import FrameTracker


def test_a_frame_older_than_the_newest_of_its_stream_is_refused_and_not_recorded() -> None:
    frames = FrameTracker(max_streams=4)

    assert frames.admit("phone", 3)
    assert frames.admit("phone", 3)  # a retry of the newest frame is still current
    assert not frames.admit("phone", 2)
    assert frames.admit("phone", 5)
    assert frames.is_current("phone", 5)
    assert not frames.is_current("phone", 3)
    assert frames.admit("tablet", 0)  # streams are independent


def test_only_the_most_recently_seen_streams_are_remembered() -> None:
    frames = FrameTracker(max_streams=2)
    frames.admit("a", 10)
    frames.admit("b", 10)
    assert not frames.admit("a", 1)  # refused, but "a" is now the most recently seen
    frames.admit("c", 10)

    assert len(frames) == 2
    assert frames.admit("b", 1)  # "b" was evicted: it starts afresh
    assert not frames.admit("c", 9)


def test_needs_room_for_a_stream() -> None:
    with pytest.raises(ValueError, match="max_streams"):
        FrameTracker(0)
