"""Suite-wide test policy: in CI (``CI=true``) a skipped test fails the run, so nothing silently stops being tested."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["pytester"]

_IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport() -> object:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if _IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true turns skips into failures): {report.longrepr}"
