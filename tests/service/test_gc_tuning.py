"""The collector is tuned while the app runs and left as it was found once it stops."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from service.config import Settings
from service.gc_tuning import YOUNG_GENERATION_THRESHOLD, server_gc
from service.main import create_app


def test_the_startup_heap_is_frozen_and_the_threshold_raised_only_inside_the_block() -> None:
    thresholds = gc.get_threshold()
    with server_gc():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *thresholds[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds


def test_the_app_tunes_the_collector_while_serving(settings: Settings) -> None:
    thresholds = gc.get_threshold()
    with TestClient(create_app(settings)) as client:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
        assert client.get("/health/ready").status_code == 200
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
