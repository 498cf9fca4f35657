"""imaging.digit: real uploads come out as MNIST-style 28x28 digits, and hostile files only as ImagingErrors."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, GifImagePlugin, Image, ImageDraw, PngImagePlugin

from contract import ModelStore
from evaluation.renderings import side_lit_photo
from imaging.decoding import DecodeLimits, decode_image
from imaging.digit import (
    CENTRE_OF_MASS,
    DIGIT_BOX_PIXELS,
    PAPER_MARGIN_PIXELS,
    PreparedDigit,
    center_by_mass,
    crop_to_content,
    fit_into_box,
    invert_if_light_background,
    pad_with_paper,
    prepare_digit,
    remove_background,
    shrink_to_work_size,
)
from imaging.errors import (
    ImageTooLargeError,
    ImagingError,
    InvalidImageError,
    NoDigitFoundError,
    UnsupportedImageTypeError,
)
from service.registry import load_model
from tests.support import images
from training.data import default_data_dir, load_mnist

LIMITS = DecodeLimits(max_image_pixels=50_000_000)
REPO_ROOT = Path(__file__).resolve().parents[2]
# The level at which the tests measure an ink box: fainter pixels are the anti-aliased fringe of a stroke.
INK_LEVEL = 0.1
MNIST_SAMPLE = 1000

Image2D = npt.NDArray[np.float32]


def centre_of_mass(image: Image2D) -> tuple[float, float]:
    mass = float(image.sum())
    rows = float(image.sum(axis=1) @ np.arange(image.shape[0])) / mass
    cols = float(image.sum(axis=0) @ np.arange(image.shape[1])) / mass
    return rows, cols


def ink_box(image: Image2D, level: float = INK_LEVEL) -> tuple[int, int]:
    """Height and width of the box around pixels brighter than ``level``."""
    rows = np.flatnonzero((image > level).any(axis=1))
    cols = np.flatnonzero((image > level).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def assert_valid_tensor(prepared: PreparedDigit) -> Image2D:
    assert prepared.pixels.shape == (1, 28, 28)
    assert prepared.pixels.dtype == np.float32
    image = prepared.pixels[0]
    assert float(image.min()) >= 0.0
    assert float(image.max()) <= 1.0
    return image


def assert_mnist_layout(prepared: PreparedDigit) -> Image2D:
    """MNIST polarity (background 0, ink bright), centre of mass within a pixel of (14, 14), a 20-pixel box."""
    image = assert_valid_tensor(prepared)
    assert np.median(image) == 0.0
    assert (image == 0.0).mean() > 0.6
    assert image.max() >= 0.9
    rows, cols = centre_of_mass(image)
    assert abs(rows - CENTRE_OF_MASS) <= 1.0
    assert abs(cols - CENTRE_OF_MASS) <= 1.0
    assert max(ink_box(image)) in (DIGIT_BOX_PIXELS - 1, DIGIT_BOX_PIXELS)
    return image


@pytest.fixture(scope="module")
def reference() -> Image2D:
    """The 7 drawn cleanly, dark on light: every other rendering of the same glyph must come out like it."""
    return assert_mnist_layout(prepare_digit(images.encode(images.seven(), "PNG"), LIMITS))


def mean_difference(image: Image2D, other: Image2D) -> float:
    return float(np.abs(image - other).mean())


def _sixteen_bit() -> bytes:
    pixels = np.asarray(images.seven(), dtype=np.uint16) * 257
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"
    return images.encode(image, "PNG")


def _palette_with_transparency(image_format: str) -> bytes:
    # Paper is palette index 255, coloured black but transparent: ignoring transparency would lose the digit.
    indices = 255 - np.asarray(images.seven_mask((200, 200), images.centred_box((200, 200))))
    image = Image.fromarray(indices.astype(np.uint8)).convert("P")
    image.putpalette([v for level in range(255) for v in (level, level, level)] + [0, 0, 0])
    return images.encode(image, image_format, transparency=255)


def _float_tiff() -> bytes:
    return images.encode(Image.fromarray(np.asarray(images.seven(), dtype=np.float32) / 255.0), "TIFF")


# Each case renders the same centred 7 (the reference) through a different encoding, mode or background.
SAME_GLYPH: dict[str, Callable[[], bytes]] = {
    "light_on_dark": lambda: images.encode(images.seven(ink=255, paper=0), "PNG"),
    "grey_levels": lambda: images.encode(images.seven(ink=90, paper=170), "PNG"),
    "huge_png_3000": lambda: images.encode(images.seven((3000, 3000)), "PNG"),
    "huge_jpeg_3000": lambda: images.encode(images.seven((3000, 3000)).convert("RGB"), "JPEG", quality=90),
    "rgba_canvas": lambda: images.encode(images.canvas_drawing(200), "PNG"),
    "rgba_canvas_white_ink": lambda: images.encode(images.canvas_drawing(200, ink=(255, 255, 255)), "PNG"),
    "rgba_webp": lambda: images.encode(images.canvas_drawing(200), "WEBP", lossless=True),
    "sixteen_bit_png": _sixteen_bit,
    "palette_transparency_png": lambda: _palette_with_transparency("PNG"),
    "palette_transparency_gif": lambda: _palette_with_transparency("GIF"),
    "cmyk_jpeg": lambda: images.encode(images.seven().convert("CMYK"), "JPEG", quality=92),
    "bilevel_bmp": lambda: images.encode(images.seven().convert("1"), "BMP"),
    "rgb_tiff_lzw": lambda: images.encode(images.seven().convert("RGB"), "TIFF", compression="tiff_lzw"),
    "float_tiff": _float_tiff,
    "la_png": lambda: images.encode(images.seven().convert("LA"), "PNG"),
}


@pytest.mark.parametrize("make", SAME_GLYPH.values(), ids=SAME_GLYPH.keys())
def test_every_encoding_of_the_glyph_gives_the_reference_digit(make: Callable[[], bytes], reference: Image2D) -> None:
    image = assert_mnist_layout(prepare_digit(make(), LIMITS))
    assert mean_difference(image, reference) < 0.03


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: images.encode(images.seven((400, 300), (10, 200, 90, 290)), "PNG"), id="off_centre"),
        pytest.param(lambda: images.encode(images.seven((8, 8), (0, 0, 8, 8)), "PNG"), id="tiny_8x8"),
        pytest.param(lambda: images.encode(images.seven((30, 90), (2, 20, 28, 70)), "PNG"), id="tall_narrow"),
        pytest.param(lambda: images.encode(images.photo_of_paper(), "PNG"), id="noisy_gradient"),
        pytest.param(
            lambda: images.encode(images.photo_of_paper((1600, 1200), seed=1).convert("RGB"), "JPEG", quality=85),
            id="noisy_gradient_phone_jpeg",
        ),
    ],
)
def test_real_uploads_come_out_in_mnist_layout(make: Callable[[], bytes]) -> None:
    assert_mnist_layout(prepare_digit(make(), LIMITS))


def test_noisy_gradient_background_is_removed(reference: Image2D) -> None:
    image = assert_mnist_layout(prepare_digit(images.encode(images.photo_of_paper(), "PNG"), LIMITS))
    height, width = ink_box(image)
    assert (image > 0.0).sum() < 1.5 * (reference > 0.0).sum()
    assert height == DIGIT_BOX_PIXELS
    assert width <= height


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_turns_the_digit_upright(orientation: int) -> None:
    upright = assert_mnist_layout(prepare_digit(images.encode(images.seven().convert("RGB"), "JPEG"), LIMITS))
    turned = assert_mnist_layout(prepare_digit(images.exif_rotated_jpeg(images.seven(), orientation), LIMITS))
    assert mean_difference(turned, upright) < 0.03
    # The 7's bar makes its top heavier than its bottom; a digit left on its side or head would not be.
    assert turned[:14].sum() > 1.3 * turned[14:].sum()


def _png_with_orientation(carrier: str, orientation: int) -> bytes:
    """An RGB PNG of random pixels whose orientation is stated the way ``carrier`` names."""
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    info = PngImagePlugin.PngInfo()
    if carrier == "eXIf chunk":
        return images.encode(image, "PNG", exif=exif)
    if carrier == "raw EXIF text":  # as ImageMagick writes it
        raw = exif.tobytes()
        info.add_text("Raw profile type exif", f"\nexif\n{len(raw)}\n{raw.hex()}")
    else:
        xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="{orientation}"/></x:xmpmeta>'
        info.add_itxt("XML:com.adobe.xmp", xmp, zip=True)
    return images.encode(image, "PNG", pnginfo=info)


@pytest.mark.parametrize("carrier", ["eXIf chunk", "raw EXIF text", "XMP"])
def test_png_orientation_is_applied_from_every_place_pillow_reads_it(carrier: str) -> None:
    data = _png_with_orientation(carrier, 6)
    with Image.open(io.BytesIO(data)) as stored:
        expected = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))

    np.testing.assert_array_equal(np.asarray(decode_image(data, LIMITS)), expected)


def test_broken_exif_block_is_ignored(reference: Image2D) -> None:
    data = images.with_exif_chunk(images.encode(images.seven(), "PNG"), b"II*\x00\xff\xff\xff\x7f garbage")
    assert mean_difference(assert_mnist_layout(prepare_digit(data, LIMITS)), reference) < 0.01


def test_huge_exif_block_is_decoded_quickly(reference: Image2D) -> None:
    data = images.with_exif_chunk(images.encode(images.seven(), "PNG"), images.huge_exif(60_000))
    assert len(data) > 500_000
    started = time.perf_counter()
    image = assert_mnist_layout(prepare_digit(data, LIMITS))
    assert time.perf_counter() - started < 2.0
    assert mean_difference(image, reference) < 0.01


def test_animated_gif_uses_only_the_first_frame_and_stays_fast() -> None:
    single = prepare_digit(images.animated_gif(images.seven(), 1), LIMITS).pixels
    data = images.animated_gif(images.seven(), 400)
    assert GifImagePlugin.GifImageFile(io.BytesIO(data)).n_frames == 400
    started = time.perf_counter()
    many = prepare_digit(data, LIMITS).pixels
    assert time.perf_counter() - started < 1.0
    assert np.array_equal(many, single)


def test_the_debug_png_holds_exactly_the_pixels_the_models_saw() -> None:
    prepared = prepare_digit(images.encode(images.seven(), "PNG"), LIMITS, with_png=True)
    assert prepared.png is not None
    decoded = Image.open(io.BytesIO(prepared.png))
    assert decoded.format == "PNG"
    assert decoded.size == (28, 28)
    assert np.array_equal(np.asarray(decoded), (prepared.pixels[0] * 255).round().astype(np.uint8))
    assert prepare_digit(images.encode(images.seven(), "PNG"), LIMITS).png is None


# -- error paths --------------------------------------------------------------------------------------------


def _zip_holding_a_png() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("digit.png", images.encode(images.seven(), "PNG"))
    return buffer.getvalue()


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


ERRORS: dict[str, tuple[Callable[[], bytes], type[ImagingError]]] = {
    "empty": (lambda: b"", InvalidImageError),
    "text_named_png": (lambda: b"this is a text file with a .png name\n" * 10, UnsupportedImageTypeError),
    "pdf": (
        lambda: b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n",
        UnsupportedImageTypeError,
    ),
    "svg": (
        lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>',
        UnsupportedImageTypeError,
    ),
    "zip": (_zip_holding_a_png, UnsupportedImageTypeError),
    "signature_only_png": (lambda: b"\x89PNG\r\n\x1a\n", InvalidImageError),
    "truncated_png": (lambda: _truncated(images.encode(images.seven(), "PNG")), InvalidImageError),
    "truncated_jpeg": (lambda: _truncated(images.encode(images.seven(), "JPEG")), InvalidImageError),
    "corrupt_crc_png": (lambda: images.with_corrupt_crc(images.encode(images.seven(), "PNG")), InvalidImageError),
    "png_bomb_50000x50000": (lambda: images.png_header_claiming(50_000, 50_000), ImageTooLargeError),
    "gif_bomb_65535x65535": (lambda: images.gif_header_claiming(65_535, 65_535), ImageTooLargeError),
    "blank_white": (lambda: images.encode(Image.new("L", (200, 200), 255), "PNG"), NoDigitFoundError),
    "blank_grey_jpeg": (
        lambda: images.encode(Image.new("RGB", (640, 480), (128, 120, 110)), "JPEG"),
        NoDigitFoundError,
    ),
    "transparent_canvas": (
        lambda: images.encode(Image.new("RGBA", (280, 280), (0, 0, 0, 0)), "PNG"),
        NoDigitFoundError,
    ),
    "blank_noisy_paper": (
        lambda: images.encode(
            Image.fromarray(np.random.default_rng(0).normal(200, 6, (240, 320)).clip(0, 255).astype(np.uint8)), "PNG"
        ),
        NoDigitFoundError,
    ),
}


@pytest.mark.parametrize(("make", "error"), ERRORS.values(), ids=ERRORS.keys())
def test_bad_upload_raises_its_exact_error(make: Callable[[], bytes], error: type[ImagingError]) -> None:
    with pytest.raises(ImagingError) as raised:
        prepare_digit(make(), LIMITS)
    assert type(raised.value) is error


# -- the steps one by one -----------------------------------------------------------------------------------


def test_shrink_to_work_size_reduces_only_large_images() -> None:
    assert shrink_to_work_size(Image.new("L", (511, 300)), 256).size == (511, 300)
    assert shrink_to_work_size(Image.new("L", (3000, 2000)), 256).size == (273, 182)


@pytest.mark.parametrize(("ink", "paper"), [(0, 255), (40, 200), (255, 0), (200, 40)])
def test_invert_if_light_background_gives_light_ink_on_dark(ink: int, paper: int) -> None:
    grey = np.asarray(images.seven((64, 64), ink=ink, paper=paper))
    result = invert_if_light_background(grey)
    assert result[0, 0] < 128
    assert result.max() > 128


def test_polarity_of_a_tiny_digit_on_a_large_noisy_page() -> None:
    # About 40 pixels of ink on 90,000 of paper: far under the 0.5 % tail, which would be the paper's noise.
    page = np.random.default_rng(0).normal(240, 2, (300, 300))
    page[100:112, 150:152] = 20
    page[100:102, 146:154] = 20
    grey = page.clip(0, 255).astype(np.uint8)
    assert invert_if_light_background(grey)[105, 150] > 200


def _tight_crop(paper: int, ink: int) -> npt.NDArray[np.uint8]:
    seven = np.asarray(images.seven((120, 120), box=(0, 0, 120, 120), ink=ink, paper=paper))
    return np.subtract(255, seven, dtype=np.uint8) if paper > ink else seven


def test_pad_with_paper_frames_a_tight_crop_with_its_paper_level() -> None:
    light_on_dark = _tight_crop(paper=250, ink=10)
    padded = pad_with_paper(light_on_dark)
    margin = PAPER_MARGIN_PIXELS
    assert padded.shape == (120 + 2 * margin, 120 + 2 * margin)
    np.testing.assert_array_equal(padded[margin:-margin, margin:-margin], light_on_dark)
    assert set(np.unique(padded[0])) == {5}


def test_pad_with_paper_leaves_images_with_paper_at_the_border_alone() -> None:
    grey = np.asarray(images.seven((120, 120), ink=255, paper=0))
    assert pad_with_paper(grey) is grey


def test_pad_with_paper_leaves_unevenly_lit_paper_alone() -> None:
    ramp = np.tile(np.linspace(0, 120, 120), (120, 1)).astype(np.uint8)
    ramp[40:80, 0:10] = 255  # ink touching the left edge
    assert pad_with_paper(ramp) is ramp


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_tight_crop_is_read_as_the_digit(image_format: str, reference: Image2D) -> None:
    upload = images.encode(Image.fromarray(255 - _tight_crop(paper=245, ink=15)).convert("RGB"), image_format)
    assert mean_difference(assert_mnist_layout(prepare_digit(upload, LIMITS)), reference) < 0.08


def test_polarity_holds_when_the_digit_fills_most_of_the_frame() -> None:
    grey = np.full((10, 10), 255, dtype=np.uint8)
    grey[1:9, 1:9] = 0
    assert invert_if_light_background(grey)[5, 5] == 255


@pytest.mark.parametrize(("row", "col"), [(185, 185), (60, 185), (185, 60)], ids=["corner", "right", "below"])
def test_remove_background_drops_a_distant_speck(row: int, col: int) -> None:
    grey = np.asarray(images.seven((200, 200), (20, 20, 120, 120), ink=255, paper=0)).copy()
    grey[row : row + 3, col : col + 3] = 255
    ink = remove_background(grey)
    assert ink[row : row + 3, col : col + 3].max() == 0.0
    assert max(crop_to_content(ink).shape) <= 101


def test_remove_background_refuses_low_contrast() -> None:
    grey = np.full((50, 50), 100, dtype=np.uint8)
    grey[20:30, 20:30] = 110
    with pytest.raises(NoDigitFoundError):
        remove_background(grey)


def test_crop_to_content_of_nothing_is_no_digit() -> None:
    with pytest.raises(NoDigitFoundError):
        crop_to_content(np.zeros((5, 5), dtype=np.float32))


def test_fit_into_box_keeps_the_aspect_ratio() -> None:
    assert fit_into_box(np.ones((100, 50), dtype=np.float32)).shape == (20, 10)
    assert fit_into_box(np.ones((3, 9), dtype=np.float32)).shape == (7, 20)
    assert fit_into_box(np.ones((400, 1), dtype=np.float32)).shape == (20, 1)


def test_center_by_mass_puts_the_centre_of_mass_within_half_a_pixel() -> None:
    digit = np.zeros((20, 12), dtype=np.float32)
    digit[2:6, :] = 1.0
    digit[6:20, 8:11] = 0.5
    image = center_by_mass(digit)
    rows, cols = centre_of_mass(image)
    assert abs(rows - CENTRE_OF_MASS) <= 0.5
    assert abs(cols - CENTRE_OF_MASS) <= 0.5
    assert image.sum() == pytest.approx(digit.sum())


def test_center_by_mass_never_cuts_ink_off() -> None:
    digit = np.zeros((20, 20), dtype=np.float32)
    digit[0, 0] = 1.0
    digit[19, 19] = 0.01
    assert center_by_mass(digit).sum() == pytest.approx(digit.sum())


# -- property-based -----------------------------------------------------------------------------------------

MAGIC = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBP",
]
SMALL_LIMITS = DecodeLimits(max_image_pixels=1_000_000)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def prepare_or_imaging_error(data: bytes) -> None:
    """The contract under fuzzing: a valid digit or a ImagingError, never any other exception."""
    try:
        assert_valid_tensor(prepare_digit(data, SMALL_LIMITS))
    except (InvalidImageError, UnsupportedImageTypeError, ImageTooLargeError, NoDigitFoundError):
        pass


@FUZZ
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=512))
def test_random_bytes_raise_only_imaging_errors(magic: bytes, body: bytes) -> None:
    prepare_or_imaging_error(magic + body)


SEEDS = {
    image_format: images.encode(images.seven((48, 40)).convert(mode), image_format)
    for image_format, mode in [
        ("PNG", "LA"),
        ("JPEG", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "L"),
        ("WEBP", "RGB"),
    ]
}


@FUZZ
@given(
    image_format=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 8)), min_size=1, max_size=6),
)
def test_corrupted_files_raise_only_imaging_errors(image_format: str, edits: list[tuple[int, int, int]]) -> None:
    data = bytearray(SEEDS[image_format])
    for position, value, cut in edits:
        index = position % len(data)
        data[index] = value
        del data[index + 1 : index + 1 + cut]
    prepare_or_imaging_error(bytes(data))


# Which encoder takes which mode (Pillow's encoders differ; WEBP converts internally).
FORMATS_BY_MODE = {
    "1": ["PNG", "BMP", "TIFF", "GIF"],
    "L": ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"],
    "LA": ["PNG", "TIFF", "WEBP"],
    "P": ["PNG", "GIF", "BMP", "TIFF"],
    "RGB": ["PNG", "JPEG", "BMP", "TIFF", "WEBP"],
    "RGBA": ["PNG", "TIFF", "WEBP"],
    "CMYK": ["JPEG", "TIFF"],
    "I;16": ["PNG", "TIFF"],
    "I": ["TIFF"],
    "F": ["TIFF"],
}


@st.composite
def random_images(draw: st.DrawFn) -> bytes:
    """A random picture (lines and boxes over a plain or noisy background) of random size, mode and format."""
    width, height = draw(st.integers(1, 600)), draw(st.integers(1, 600))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grey = Image.fromarray(
        rng.normal(rng.uniform(0, 255), rng.uniform(0, 40), (height, width)).clip(0, 255).astype(np.uint8)
    )
    pen = ImageDraw.Draw(grey)
    for _ in range(int(rng.integers(0, 5))):
        box = sorted(rng.integers(0, width, 2).tolist()) + sorted(rng.integers(0, height, 2).tolist())
        pen.line((box[0], box[2], box[1], box[3]), fill=int(rng.integers(0, 256)), width=int(rng.integers(1, 30)))
    mode = draw(st.sampled_from(sorted(FORMATS_BY_MODE)))
    image_format = draw(st.sampled_from(FORMATS_BY_MODE[mode]))
    if mode in ("I;16", "I"):
        image = Image.fromarray(
            (np.asarray(grey, dtype=np.uint16) * 257).astype(np.uint16 if mode == "I;16" else np.int32)
        )
    elif mode == "F":
        image = Image.fromarray(np.asarray(grey, dtype=np.float32) * rng.uniform(1e-3, 1e3))
    else:
        image = grey.convert(mode)
    return images.encode(image, image_format)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=random_images())
def test_random_valid_images_give_a_digit_or_no_digit_found(data: bytes) -> None:
    try:
        assert_valid_tensor(prepare_digit(data, LIMITS))
    except NoDigitFoundError:
        pass


# -- agreement with MNIST -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_sample() -> tuple[npt.NDArray[np.uint8], torch.Tensor]:
    """The first ``MNIST_SAMPLE`` official test digits (uint8) and their labels."""
    digits, labels = load_mnist(default_data_dir(), "test")
    return digits[:MNIST_SAMPLE].numpy(), labels[:MNIST_SAMPLE]


def _model_input(data: bytes) -> torch.Tensor:
    return torch.from_numpy(prepare_digit(data, LIMITS).pixels)


@pytest.fixture(scope="module")
def mnist_as_png(mnist_sample: tuple[npt.NDArray[np.uint8], torch.Tensor]) -> torch.Tensor:
    """Each digit saved as a 28x28 PNG and preprocessed again: ``(N, 1, 28, 28)``."""
    return torch.stack([_model_input(images.encode(Image.fromarray(d), "PNG")) for d in mnist_sample[0]])


@pytest.fixture(scope="module")
def mnist_as_jpeg(mnist_sample: tuple[npt.NDArray[np.uint8], torch.Tensor]) -> torch.Tensor:
    """Each digit rendered as a user upload (300x300 RGB JPEG, black on white, scaled, shifted), preprocessed."""
    rng = np.random.default_rng(7)
    return torch.stack([_model_input(images.render_mnist(d, rng)) for d in mnist_sample[0]])


def _centres(batch: torch.Tensor) -> torch.Tensor:
    mass = batch.sum(dim=(1, 2, 3))
    positions = torch.arange(28, dtype=batch.dtype)
    rows = (batch.sum(dim=3)[:, 0] @ positions) / mass
    cols = (batch.sum(dim=2)[:, 0] @ positions) / mass
    return torch.stack((rows, cols), dim=1)


def test_mnist_pngs_come_back_as_the_original_tensors(
    mnist_sample: tuple[npt.NDArray[np.uint8], torch.Tensor], mnist_as_png: torch.Tensor
) -> None:
    original = torch.from_numpy(mnist_sample[0]).unsqueeze(1).float() / 255.0
    per_digit = (mnist_as_png - original).abs().mean(dim=(1, 2, 3))
    assert float(per_digit.mean()) < 0.002
    assert float(torch.quantile(per_digit, 0.99)) < 0.01
    # MNIST put every centre of mass within half a pixel of (14, 14); a tie may round the other way.
    assert float((_centres(mnist_as_png) - _centres(original)).abs().max()) <= 1.0 + 1e-3


def test_rendered_mnist_jpegs_stay_close_to_the_original_tensors(
    mnist_sample: tuple[npt.NDArray[np.uint8], torch.Tensor], mnist_as_jpeg: torch.Tensor
) -> None:
    original = torch.from_numpy(mnist_sample[0]).unsqueeze(1).float() / 255.0
    per_digit = (mnist_as_jpeg - original).abs().mean(dim=(1, 2, 3))
    assert float(per_digit.mean()) < 0.05
    assert float(per_digit.max()) < 0.15
    assert float((_centres(mnist_as_jpeg) - _centres(original)).abs().max()) <= 1.5


# -- accuracy with the committed models ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def committed_models() -> dict[str, torch.jit.ScriptModule]:
    """The latest version of each model committed in the repository's ``model_store``, verified and loaded."""
    store = ModelStore(REPO_ROOT / "model_store")
    return {
        name: load_model(store, name, store.resolve(name), torch.device("cpu")).module
        for name in ("mlp", "lenet5", "cnn")
    }


def _accuracy(model: torch.jit.ScriptModule, batch: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        predicted = model(batch).argmax(dim=1)
    return float((predicted == labels).float().mean())


def test_committed_cnn_reads_rendered_mnist_jpegs(
    committed_models: dict[str, torch.jit.ScriptModule],
    mnist_sample: tuple[npt.NDArray[np.uint8], torch.Tensor],
    mnist_as_jpeg: torch.Tensor,
) -> None:
    assert _accuracy(committed_models["cnn"], mnist_as_jpeg, mnist_sample[1]) >= 0.98


@pytest.mark.parametrize("name", ["mlp", "lenet5", "cnn"])
def test_preprocessed_pngs_keep_each_models_accuracy(
    name: str,
    committed_models: dict[str, torch.jit.ScriptModule],
    mnist_sample: tuple[npt.NDArray[np.uint8], torch.Tensor],
    mnist_as_png: torch.Tensor,
) -> None:
    digits, labels = mnist_sample
    raw = torch.from_numpy(digits).unsqueeze(1).float() / 255.0
    model = committed_models[name]
    assert abs(_accuracy(model, mnist_as_png, labels) - _accuracy(model, raw, labels)) <= 0.005


def test_small_digits_on_paper_lit_from_one_side_are_not_framed_as_tight_crops(
    mnist_sample: tuple[npt.NDArray[np.uint8], torch.Tensor],
) -> None:
    # Paper brightening towards one edge crosses Otsu's threshold at the border in long runs, like a stroke would:
    # only its level, well short of the ink's, tells it apart (a box of lighting gradient came back otherwise).
    rng = np.random.default_rng(11)
    digits = mnist_sample[0][:100].astype(np.float32) / 255.0
    prepared = torch.stack([_model_input(side_lit_photo(digit, rng)) for digit in digits])
    per_digit = (prepared[:, 0] - torch.from_numpy(digits)).abs().mean(dim=(1, 2))
    assert float(per_digit.max()) < 0.12
