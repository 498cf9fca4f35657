"""evaluation.renderings: each rendering is a real file of the format and mode it claims, holding the digit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from evaluation import renderings
from evaluation.uploads import MNIST_CATEGORIES
from training.data import default_data_dir, load_mnist


@pytest.fixture(scope="module")
def seven() -> renderings.Ink:
    digits, labels = load_mnist(default_data_dir(), "test")
    return digits[int((labels == 7).nonzero()[0, 0])].numpy().astype(np.float32) / 255.0


EXPECTED: dict[str, tuple[str, set[str]]] = {
    "scan, tight crop on all sides": ("PNG", {"L"}),
    "large photo (> 1,000 px, JPEG)": ("JPEG", {"RGB"}),
    "bilevel PNG": ("PNG", {"1"}),
    "bilevel BMP": ("BMP", {"1"}),
    "bilevel TIFF (group 4)": ("TIFF", {"1"}),
    "16-bit grey PNG": ("PNG", {"I", "I;16"}),
    "phone photo (JPEG, light, cast, blur)": ("JPEG", {"RGB"}),
    "canvas RGBA, thick pen": ("PNG", {"RGBA"}),
    "LA, ink in alpha": ("PNG", {"LA"}),
}


@pytest.mark.parametrize("category", EXPECTED)
def test_rendering_is_the_file_it_claims(category: str, seven: renderings.Ink) -> None:
    data = MNIST_CATEGORIES[category](seven, np.random.default_rng(0))
    image_format, modes = EXPECTED[category]
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == image_format
        assert image.mode in modes


def test_tight_crop_has_ink_on_every_edge(seven: renderings.Ink) -> None:
    grey = np.asarray(Image.open(io.BytesIO(renderings.scan_tight(seven, np.random.default_rng(0)))))
    for edge in (grey[0], grey[-1], grey[:, 0], grey[:, -1]):
        assert edge.min() < 128  # dark ink reaches the border


def test_large_photo_is_over_a_thousand_pixels(seven: renderings.Ink) -> None:
    with Image.open(io.BytesIO(renderings.large_photo(seven, np.random.default_rng(0)))) as image:
        assert min(image.size) > 1000


def test_same_seed_gives_the_same_bytes(seven: renderings.Ink) -> None:
    for render in MNIST_CATEGORIES.values():
        assert render(seven, np.random.default_rng(3)) == render(seven, np.random.default_rng(3))
