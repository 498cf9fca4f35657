"""The page's "Number" mode in Chromium against the real service and the committed line reader: a "42" drawn
with the mouse, an uploaded multi-digit image, and an image with no ink. Screenshots go to ``test-artifacts/ui/``."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import FilePayload, Page, expect

from evaluation.line_images import render_scan
from tests.service.test_ui_browser import RESULT_TIMEOUT_MS, Stroke, browser, draw, page, server
from training.data import default_data_dir, load_mnist
from training.synthetic_lines import LineVariation, compose_line, crop_glyph

pytestmark = pytest.mark.slow
# The page, its browser and server are the digit panel tests' own fixtures.
__all__ = ["browser", "page", "server"]

# A 4 (two strokes) and a 2 (one), in fractions of the wide canvas, each about two thirds of its height.
FOUR: Sequence[Stroke] = [[(0.31, 0.15), (0.25, 0.62), (0.40, 0.62)], [(0.36, 0.32), (0.36, 0.86)]]
TWO: Sequence[Stroke] = [
    [(0.46, 0.30), (0.49, 0.17), (0.55, 0.14), (0.60, 0.24), (0.58, 0.42), (0.47, 0.85), (0.62, 0.85)]
]


def upload_number(page: Page, data: bytes, mime_type: str = "image/png") -> None:
    page.locator("#number-file").set_input_files(
        files=[FilePayload(name="number.png", mimeType=mime_type, buffer=data)]
    )


def test_drawn_42_is_read_with_a_box_per_digit_and_bars_on_focus(page: Page) -> None:
    draw(page, [*FOUR, *TWO], canvas="#number-canvas")

    expect(page.locator("#number-text")).to_have_text("42", timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#number-boxes .number-box")).to_have_count(2)
    page.locator("#number-digits li").nth(1).focus()
    expect(page.locator("#number-detail")).to_be_visible()
    expect(page.locator("#number-bars li")).to_have_count(10)
    expect(page.locator("#number-bars li.is-top .bar-label")).to_have_text("2")


def test_uploaded_multi_digit_image_is_read(page: Page) -> None:
    images, labels = load_mnist(default_data_dir(), "test")
    chosen = [1, 2, 3, 4, 7, 8]  # 2, 1, 0, 4, 9, 1
    rng = np.random.default_rng(5)
    ink = compose_line([crop_glyph(images[i].numpy()) for i in chosen], ["apart"] * 5, rng, LineVariation())
    text = "".join(str(int(labels[i])) for i in chosen)

    upload_number(page, render_scan(ink, rng))

    expect(page.locator("#number-text")).to_have_text(text, timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#number-boxes .number-box")).to_have_count(len(text))
    expect(page.locator("#number-status")).to_contain_text(f"Read {text}")


def test_image_without_ink_shows_the_services_message(page: Page) -> None:
    blank = io.BytesIO()
    Image.new("RGB", (600, 160), (240, 240, 236)).save(blank, format="PNG")

    upload_number(page, blank.getvalue())

    expect(page.locator("#number-error")).to_contain_text("No digits found in the image", timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#number-error")).to_contain_text("(HTTP 422)")
    expect(page.locator("#number-result")).to_be_hidden()
