"""Finding numbers on a page: connected components against a flood fill, numbers on seeded synthetic pages found
with their boxes, ruled lines taken off the digits written on them, a blank page, boxes in the upload's pixels and
reading order."""

from __future__ import annotations

import io
from collections import deque

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw

from evaluation.detection import iou
from evaluation.pages import Page, compose_page
from imaging.decoding import DecodeLimits
from imaging.detection import find_candidates, in_reading_order, label_components, prepare_page, remove_rules
from training.data import default_data_dir, load_mnist
from training.synthetic_lines import LineVariation, compose_line, crop_glyph

LIMITS = DecodeLimits(max_image_pixels=25_000_000)


@pytest.fixture(scope="module")
def glyphs() -> tuple[list[npt.NDArray[np.float32]], list[int]]:
    images, labels = load_mnist(default_data_dir(), "test")
    return [crop_glyph(image) for image in images[:400].numpy()], labels[:400].tolist()


def _flood_fill_count(mask: npt.NDArray[np.bool_]) -> tuple[int, list[int]]:
    seen = np.zeros_like(mask)
    sizes = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue, size = deque([start]), 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        sizes.append(size)
    return len(sizes), sorted(sizes)


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_components_are_those_of_an_8_connected_flood_fill(density: float) -> None:
    mask = np.random.default_rng(int(density * 100)).uniform(size=(48, 64)) < density

    components = label_components(mask)

    count, sizes = _flood_fill_count(mask)
    assert len(components) == count
    assert sorted(components.areas.tolist()) == sizes
    rebuilt = components.mask_of(np.arange(len(components)), (0, 0, mask.shape[1], mask.shape[0]))
    assert np.array_equal(rebuilt, mask)


def _pages(glyphs: tuple[list[npt.NDArray[np.float32]], list[int]], count: int, seed: int) -> list[Page]:
    rng = np.random.default_rng(seed)
    return [compose_page(glyphs[0], glyphs[1], rng) for _ in range(count)]


def test_numbers_on_synthetic_pages_are_found_with_their_boxes(
    glyphs: tuple[list[npt.NDArray[np.float32]], list[int]],
) -> None:
    pages = _pages(glyphs, 10, seed=7)
    found = total = 0
    for page in pages:
        candidates = prepare_page(page.data, LIMITS).candidates
        total += len(page.numbers)
        found += sum(any(iou(number.box, c.box) >= 0.5 for c in candidates) for number in page.numbers)
        for candidate in candidates:
            assert candidate.glyphs.shape[1:] == (28, 28)
            assert candidate.line.pixels.shape[0] == 32

    assert total >= 20
    assert found / total >= 0.95


def _paper(size: tuple[int, int] = (640, 480)) -> Image.Image:
    rng = np.random.default_rng(3)
    width, height = size
    xx = np.linspace(0.0, 1.0, width)[np.newaxis, :]
    # A lamp to the left, and paper grain.
    grey = 235.0 - 60.0 * xx + rng.normal(0.0, 3.0, (height, width))
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_a_blank_page_under_uneven_light_has_no_candidates() -> None:
    assert prepare_page(_jpeg(_paper()), LIMITS).candidates == []


def _number_on_paper(glyphs: tuple[list[npt.NDArray[np.float32]], list[int]], with_rule: bool) -> bytes:
    ink = compose_line(glyphs[0][:4], ["apart"] * 3, np.random.default_rng(1), LineVariation(max_rotation_deg=0))
    scaled = Image.fromarray((ink * 255).astype(np.uint8)).resize((ink.shape[1] * 3, ink.shape[0] * 3))
    paper = _paper()
    paper.paste((20, 20, 60), (150, 200), scaled)
    if with_rule:
        # A ruled line across the page through the digits' lower half, as on lined paper.
        ImageDraw.Draw(paper).line([(0, 200 + scaled.height * 0.7), (639, 205 + scaled.height * 0.7)], fill=90, width=2)
    return _jpeg(paper)


def test_a_ruled_line_through_a_number_is_taken_off_it(
    glyphs: tuple[list[npt.NDArray[np.float32]], list[int]],
) -> None:
    plain = prepare_page(_number_on_paper(glyphs, with_rule=False), LIMITS).candidates
    ruled = prepare_page(_number_on_paper(glyphs, with_rule=True), LIMITS).candidates

    assert len(plain) == 1
    assert [iou(c.box, plain[0].box) >= 0.8 for c in ruled] == [True]
    assert len(plain[0].glyphs) == len(ruled[0].glyphs) == 4


def test_a_rule_is_erased_but_not_where_a_stroke_crosses_it() -> None:
    mask = np.zeros((300, 300), dtype=bool)
    mask[150:152, :] = True  # the rule, across the whole width
    mask[120:180, 100:104] = True  # a stroke down through it (too short to be a rule itself)

    cleaned = remove_rules(mask)

    assert not cleaned[150:152, :95].any() and not cleaned[150:152, 110:].any()
    assert cleaned[120:180, 100:104].all()
    assert len(label_components(cleaned)) == 1


def test_the_pieces_of_a_digit_cut_apart_are_one_character(
    glyphs: tuple[list[npt.NDArray[np.float32]], list[int]],
) -> None:
    pieces = [glyph.copy() for glyph in glyphs[0][:4]]
    for glyph in pieces:
        middle = glyph.shape[0] // 2
        glyph[middle - 1 : middle + 2] = 0.0  # each digit cut across its middle, as a faded stroke leaves it
    ink = compose_line(pieces, ["apart"] * 3, np.random.default_rng(1), LineVariation(max_rotation_deg=0))
    scaled = Image.fromarray((ink * 255).astype(np.uint8)).resize((ink.shape[1] * 3, ink.shape[0] * 3))
    paper = _paper()
    paper.paste((20, 20, 60), (150, 200), scaled)

    candidates = prepare_page(_jpeg(paper), LIMITS).candidates

    assert len(candidates) == 1
    assert len(candidates[0].glyphs) == 4


def test_a_pale_margin_rule_is_taken_off_even_where_only_pieces_of_it_stand_out(
    glyphs: tuple[list[npt.NDArray[np.float32]], list[int]],
) -> None:
    paper = Image.open(io.BytesIO(_number_on_paper(glyphs, with_rule=False))).convert("RGB")
    draw = ImageDraw.Draw(paper)
    # A margin rule down the page, pale (about 30 grey levels under the paper) with darker stretches 15 px long
    # where the pen pressed: at the ink's threshold only those stretches stand out, each like a written 1.
    for top in range(20, 460, 60):
        draw.line([(60, top), (60, top + 60)], fill=(200, 200, 215), width=2)
        draw.line([(60, top), (60, top + 15)], fill=(120, 120, 150), width=2)

    candidates = prepare_page(_jpeg(paper), LIMITS).candidates

    assert len(candidates) == 1
    assert candidates[0].box[0] >= 150


def test_boxes_are_in_the_uploaded_images_pixels(glyphs: tuple[list[npt.NDArray[np.float32]], list[int]]) -> None:
    page = _pages(glyphs, 1, seed=11)[0]
    image = Image.open(io.BytesIO(page.data))
    large = _jpeg(image.resize((image.width * 3, image.height * 3), Image.Resampling.BICUBIC))

    prepared = prepare_page(large, LIMITS)

    assert prepared.size == (image.width * 3, image.height * 3)
    for number in page.numbers:
        scaled = (number.box[0] * 3, number.box[1] * 3, number.box[2] * 3, number.box[3] * 3)
        assert any(iou(scaled, c.box) >= 0.5 for c in prepared.candidates)


def test_reading_order_is_rows_top_to_bottom_then_left_to_right() -> None:
    boxes = [
        (300.0, 105.0, 360.0, 150.0),
        (10.0, 300.0, 80.0, 340.0),
        (20.0, 100.0, 90.0, 140.0),
        (400.0, 95.0, 430.0, 140.0),
    ]

    ordered = in_reading_order(boxes, key=lambda box: box)

    assert ordered == [boxes[2], boxes[0], boxes[3], boxes[1]]


def test_candidates_come_in_reading_order_on_a_grey_array(
    glyphs: tuple[list[npt.NDArray[np.float32]], list[int]],
) -> None:
    page = _pages(glyphs, 1, seed=3)[0]
    grey = np.asarray(Image.open(io.BytesIO(page.data)).convert("L"), dtype=np.uint8)

    boxes = [c.box for c in find_candidates(grey)]

    assert boxes == in_reading_order(boxes, key=lambda box: box)
