"""The suite's own policy: with ``CI=true`` a skipped test fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

_CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.mark.parametrize(("ci", "expected"), [("true", {"failed": 1}), ("", {"skipped": 1})])
def test_skip_becomes_failure_only_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, expected: dict[str, int]
) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(_CONFTEST.read_text().replace('pytest_plugins = ["pytester"]', ""))
    pytester.makepyfile("import pytest\n\ndef test_skipped():\n    pytest.skip('not here')\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(**expected)
