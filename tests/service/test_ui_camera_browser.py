"""The page's "Camera" mode in Chromium against the real service: a fake camera (Chromium's file-backed capture
device) plays a synthetic page with three handwritten numbers, and the overlay and the list show them; with the
permission denied, or with no camera, the page says so. Screenshots go to ``test-artifacts/ui/``."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from evaluation.pages import Page as SyntheticPage
from evaluation.pages import compose_page
from harness.server import RunningServer
from imaging.detection import in_reading_order
from tests.service.test_ui_browser import ARTIFACTS_DIR, CHROMIUM, CHROMIUM_ARGS, DESKTOP, RESULT_TIMEOUT_MS, server
from training.data import default_data_dir, load_mnist
from training.synthetic_lines import crop_glyph

pytestmark = pytest.mark.slow
# The service is the digit panel tests' own fixture.
__all__ = ["server"]

# A seeded 640x480 page with three numbers and a printed word, which the committed reader reads exactly.
PAGE_SEED = 23
FAKE_CAMERA_FRAMES = 5


def synthetic_page() -> SyntheticPage:
    images, labels = load_mnist(default_data_dir(), "test")
    glyphs = [crop_glyph(image) for image in images[:300].numpy()]
    rng = np.random.default_rng(PAGE_SEED)
    return compose_page(glyphs, labels[:300].tolist(), rng, size=(640, 480), number_count=3, word_count=1)


def write_y4m(jpeg: bytes, path: Path) -> None:
    """A few identical frames of ``jpeg`` as a YUV 4:2:0 Y4M file, the format Chromium's fake camera plays."""
    image = Image.open(io.BytesIO(jpeg)).convert("YCbCr")
    width, height = image.size
    luma, blue, red = image.split()
    planes = luma.tobytes() + b"".join(
        plane.resize((width // 2, height // 2), Image.Resampling.BOX).tobytes() for plane in (blue, red)
    )
    header = f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + (b"FRAME\n" + planes) * FAKE_CAMERA_FRAMES)


@pytest.fixture(scope="module")
def camera_page() -> SyntheticPage:
    return synthetic_page()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-deps")
    with sync_playwright() as running:
        yield running


def _launch(playwright: Playwright, args: list[str]) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + args)


@pytest.fixture(scope="module")
def camera_browser(
    playwright: Playwright, tmp_path_factory: pytest.TempPathFactory, camera_page: SyntheticPage
) -> Iterator[Browser]:
    video = tmp_path_factory.mktemp("camera") / "page.y4m"
    write_y4m(camera_page.data, video)
    fake_camera = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    browser = _launch(playwright, fake_camera)
    yield browser
    browser.close()


def _open(browser: Browser, server: RunningServer) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(server.url)
    return opened, errors


def _finish(page: Page, name: str, errors: list[str]) -> None:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS_DIR / f"{name}.png", full_page=True)
    page.context.close()
    assert errors == []


def test_the_numbers_in_front_of_the_camera_are_boxed_and_read(
    camera_browser: Browser, server: RunningServer, camera_page: SyntheticPage
) -> None:
    page, errors = _open(camera_browser, server)
    page.locator("#camera-start").focus()
    page.keyboard.press("Enter")

    expected = [number.text for number in in_reading_order(camera_page.numbers, key=lambda number: number.box)]
    numbers = page.locator("#camera-numbers li")
    expect(numbers).to_have_count(len(expected), timeout=RESULT_TIMEOUT_MS)
    expect(numbers).to_have_text(expected)
    expect(page.locator("#camera-status")).to_contain_text(f"{len(expected)} numbers in view")
    overlay_ink = page.evaluate(
        """() => {
            const canvas = document.getElementById("camera-overlay");
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let drawn = 0;
            for (let i = 3; i < pixels.length; i += 4) drawn += pixels[i] > 0;
            return drawn;
        }"""
    )
    assert overlay_ink > 1000  # boxes and labels drawn over the video
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.locator("#camera").screenshot(path=ARTIFACTS_DIR / "camera_overlay.png")

    page.locator("#camera-freeze").click()
    expect(page.locator("#camera-freeze")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#camera-status")).to_contain_text("Frozen")
    page.locator("#camera-stop").click()
    expect(page.locator("#camera-view")).to_be_hidden()
    _finish(page, "test_camera_reads_numbers", errors)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--use-fake-device-for-media-stream", "--deny-permission-prompts"], "Camera permission was denied"),
        ([], "No camera was found"),
    ],
    ids=["permission-denied", "no-camera"],
)
def test_a_camera_that_cannot_be_used_is_explained(
    playwright: Playwright, server: RunningServer, flags: list[str], message: str
) -> None:
    browser = _launch(playwright, flags)
    try:
        page, errors = _open(browser, server)
        page.locator("#camera-start").click()

        expect(page.locator("#camera-error")).to_contain_text(message, timeout=RESULT_TIMEOUT_MS)
        expect(page.locator("#camera-view")).to_be_hidden()
        expect(page.locator("#camera-start")).to_be_enabled()
        _finish(page, f"test_camera_{'_'.join(message.split()[:2]).lower()}", errors)
    finally:
        browser.close()
