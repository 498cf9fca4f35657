"""The web page in a real browser (Debian's Chromium via Playwright) against the real service and committed models.

Screenshots of each test's final page go to ``test-artifacts/ui/`` for review.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, FilePayload, Page, ViewportSize, expect, sync_playwright

from harness.server import REPO_ROOT, RunningServer, running_server
from training.data import default_data_dir, load_mnist

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download needs the internet; these flags keep Debian's build offline and headless.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
COMMITTED_STORE = REPO_ROOT / "model_store"
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts" / "ui"
DESKTOP = ViewportSize(width=1100, height=900)
PHONE = ViewportSize(width=390, height=844)
# Generous: the service shares two CPU cores with the browser and whatever else runs.
RESULT_TIMEOUT_MS = 15_000
MODEL_NAMES = ("mlp", "lenet5", "cnn")
# MNIST test images that every committed model classifies correctly (a 2 and a 0).
UPLOAD_INDEX = 1
RECOVERY_INDEX = 3

Stroke = Sequence[tuple[float, float]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("ui-server") / "service.log"
    # Named explicitly: this module-scoped server starts before the suite's fixture clears DIGITS_* variables.
    with running_server({"DIGITS_MODEL_STORE_DIR": str(COMMITTED_STORE)}, log_path) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-deps")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, server: RunningServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    opened = context.new_page()
    script_errors: list[str] = []
    opened.on("pageerror", lambda error: script_errors.append(str(error)))
    opened.goto(server.url)
    yield opened
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    opened.screenshot(path=ARTIFACTS_DIR / f"{request.node.name}.png", full_page=True)
    context.close()
    assert script_errors == []


def mnist_png(index: int) -> tuple[bytes, int]:
    """One MNIST test image as the 28x28 PNG file a user could upload, and its label."""
    images, labels = load_mnist(default_data_dir(), "test")
    buffer = io.BytesIO()
    Image.fromarray(images[index].numpy(), mode="L").save(buffer, format="PNG")
    return buffer.getvalue(), int(labels[index])


def upload(page: Page, name: str, data: bytes) -> None:
    page.get_by_label("Choose an image").set_input_files(
        files=[FilePayload(name=name, mimeType="image/png", buffer=data)]
    )


def draw(page: Page, strokes: Sequence[Stroke], canvas: str = "#draw-canvas") -> None:
    """Draw with the mouse on ``canvas``; points are fractions of it, each stroke one press-move-release."""
    box = page.locator(canvas).bounding_box()
    if box is None:
        pytest.fail(f"the canvas {canvas} is not visible")
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=12)
        page.mouse.up()


def expect_answer(page: Page, digit: int) -> None:
    """The ensemble and every model show ``digit``, with ten bars each and the model input image."""
    expect(page.locator("#ensemble-digit")).to_have_text(str(digit), timeout=RESULT_TIMEOUT_MS)
    cards = page.locator("#models .model")
    expect(cards).to_have_count(len(MODEL_NAMES))
    for name in MODEL_NAMES:
        card = page.locator(f'#models .model[data-model="{name}"]')
        expect(card.locator(".digit")).to_have_text(str(digit))
        expect(card.locator(".version")).to_have_text(re.compile(r"^version \d+$"))
        expect(card.locator(".bars li")).to_have_count(10)
    expect(page.locator("#ensemble-bars li")).to_have_count(10)
    expect(page.locator("#model-input")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    for latency in ("#latency-server", "#latency-total"):
        expect(page.locator(latency)).to_have_text(re.compile(r"^[\d.,]+ ms$"))
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#digit-check")).to_be_hidden()


def test_upload_of_an_mnist_digit_shows_every_model_and_the_ensemble(page: Page, server: RunningServer) -> None:
    data, label = mnist_png(UPLOAD_INDEX)

    upload(page, "digit.png", data)

    expect_answer(page, label)
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#status")).to_contain_text(f"Prediction for digit.png: {label} (")
    api_answer = httpx.post(f"{server.url}/predict", files={"file": ("digit.png", data, "image/png")}, timeout=10.0)
    for prediction in api_answer.json()["predictions"]:
        card = page.locator(f'#models .model[data-model="{prediction["model"]}"]')
        expect(card.locator(".version")).to_have_text(f"version {prediction['version']}")
        expect(card.locator(".confidence")).to_have_text(f"{prediction['confidence']:.1%} confidence")
    ensemble_confidence = api_answer.json()["ensemble"]["confidence"]
    expect(page.locator("#ensemble .confidence")).to_have_text(f"{ensemble_confidence:.1%} confidence")


@pytest.mark.parametrize(
    ("digit", "strokes"),
    [
        (1, [[(0.5, 0.15), (0.5, 0.85)]]),
        (7, [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]]),
    ],
    ids=["one", "seven"],
)
def test_drawing_is_predicted_when_the_stroke_ends(page: Page, digit: int, strokes: Sequence[Stroke]) -> None:
    draw(page, strokes)

    expect_answer(page, digit)
    expect(page.locator("#status")).to_contain_text(f"Prediction for your drawing: {digit} (")


@pytest.mark.parametrize(
    ("strokes", "notice"),
    [
        # A capital A: two slanted strokes and a bar.
        ([[(0.2, 0.85), (0.5, 0.15), (0.8, 0.85)], [(0.33, 0.55), (0.67, 0.55)]], "does not look like a handwritten"),
        # "17" drawn small beside each other: not one digit (with the canvas's thick pen the check often reads a
        # drawn number as "not a digit" rather than "several digits"; either answer flags it).
        (
            [[(0.25, 0.2), (0.25, 0.8)], [(0.45, 0.2), (0.8, 0.2), (0.6, 0.8)]],
            re.compile("looks like several digits|does not look like a handwritten"),
        ),
    ],
    ids=["letter", "number"],
)
def test_drawing_that_is_not_one_digit_says_so_and_still_shows_the_guesses(
    page: Page, strokes: Sequence[Stroke], notice: str | re.Pattern[str]
) -> None:
    draw(page, strokes)

    expect(page.locator("#digit-check")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#digit-check")).to_contain_text(notice)
    expect(page.locator("#status")).to_contain_text(notice)
    expect(page.locator("#ensemble-digit")).to_have_text(re.compile(r"^\d$"))
    expect(page.locator("#models .model")).to_have_count(len(MODEL_NAMES))


def test_clear_erases_the_drawing_and_its_results(page: Page) -> None:
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])
    expect_answer(page, 1)

    page.locator("#clear-button").click()

    expect(page.locator("#result-body")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Upload or draw a digit to see the predictions.")
    ink_pixels = page.evaluate(
        """() => {
            const canvas = document.getElementById("draw-canvas");
            const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            return data.filter((value, i) => i % 4 === 0 && value < 255).length;
        }"""
    )
    assert ink_pixels == 0


def test_not_an_image_shows_the_api_error_and_the_page_keeps_working(page: Page, server: RunningServer) -> None:
    not_an_image = b"This is a text file, not a picture of a digit.\n"
    api_answer = httpx.post(
        f"{server.url}/predict", files={"file": ("notes.png", not_an_image, "image/png")}, timeout=10.0
    )
    assert api_answer.status_code in {400, 415}

    upload(page, "notes.png", not_an_image)

    # The Number panel has its own alert and status: the digit panel's are addressed by id.
    error = page.locator("#error")
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_have_text(
        f"{api_answer.json()['detail']} (HTTP {api_answer.status_code})", timeout=RESULT_TIMEOUT_MS
    )
    expect(page.locator("#result-body")).to_be_hidden()

    data, label = mnist_png(RECOVERY_INDEX)
    upload(page, "digit.png", data)
    expect_answer(page, label)


def test_page_fits_a_phone_and_its_controls_are_labelled_and_reachable_by_keyboard(page: Page) -> None:
    page.set_viewport_size(PHONE)
    data, label = mnist_png(UPLOAD_INDEX)
    upload(page, "digit.png", data)
    expect_answer(page, label)

    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    focused: list[str] = []
    for _ in range(4):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.className"))
    assert focused[:3] == ["skip-link", "file-input", "clear-button"]
    expect(page.get_by_role("img", name="Drawing area: draw one digit with a mouse, finger or pen")).to_be_visible()
    expect(page.locator("#status")).to_have_attribute("aria-live", "polite")
