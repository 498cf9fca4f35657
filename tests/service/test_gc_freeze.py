"""The start-up heap is frozen while the app runs and collectable again once it stops."""

from __future__ import annotations

import gc

from service.config import Settings
from service.gc_freeze import frozen_startup_heap
from service.main import create_app
from tests.service.conftest import TestClient


def test_objects_alive_at_the_start_are_frozen_only_inside_the_block() -> None:
    before = gc.get_freeze_count()
    with frozen_startup_heap():
        assert gc.get_freeze_count() > before
    assert gc.get_freeze_count() == 0


def test_the_app_freezes_its_startup_heap_while_serving(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert gc.get_freeze_count() > 0
        assert client.get("/health/ready").status_code == 200
    assert gc.get_freeze_count() == 0
