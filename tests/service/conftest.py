"""Service test fixtures (defined in :mod:`tests.support.fixtures`)."""

from tests.support.fixtures import (  # noqa: F401  (fixtures)
    _no_digits_environment,
    app,
    client,
    digit_png,
    pristine_store,
    settings,
    store,
)
