"""Evaluation tests run their torch work on one thread."""

from collections.abc import Iterator

import pytest

from tests.support.threads import one_torch_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield
