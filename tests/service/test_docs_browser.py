"""``/docs`` in a real browser with every request off this host blocked: Swagger UI renders from the service's own
assets, and its "Try it out" on ``/predict`` gets a prediction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from harness.server import RunningServer
from tests.service.test_ui_browser import ARTIFACTS_DIR, RESULT_TIMEOUT_MS, browser, server  # noqa: F401
from tests.support.uploads import draw_seven, png_bytes

pytestmark = pytest.mark.slow

LOOPBACK_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture
def offline_page(
    browser: Browser,  # noqa: F811
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Page, list[str]]]:
    """A page whose requests to any host but loopback are aborted, and the list of those requests."""
    context = browser.new_context()
    blocked: list[str] = []

    def only_loopback(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK_HOSTS or url.startswith("data:"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    context.route("**/*", only_loopback)
    opened = context.new_page()
    yield opened, blocked
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    opened.screenshot(path=ARTIFACTS_DIR / f"{request.node.name}.png", full_page=True)
    context.close()


def test_swagger_ui_renders_offline_and_try_it_out_predicts(
    offline_page: tuple[Page, list[str]],
    server: RunningServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    page, blocked = offline_page
    digit = tmp_path / "seven.png"
    digit.write_bytes(png_bytes(draw_seven(size=200)))

    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Handwritten digit recognition")
    operation = page.locator("#operations-prediction-predict_predict_post")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("input[type=file]").set_input_files(digit)
    operation.get_by_role("button", name="Execute").click()

    status = operation.locator(".live-responses-table .response .response-col_status")
    expect(status).to_have_text("200", timeout=RESULT_TIMEOUT_MS)
    expect(operation.locator(".live-responses-table .response .response-col_description")).to_contain_text('"label": 7')
    assert blocked == []
