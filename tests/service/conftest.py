"""Service test fixtures (defined in :mod:`tests.support.fixtures`)."""

from tests.support.fixtures import *  # noqa: F403
