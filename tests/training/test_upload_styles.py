"""Re-rendered uploads: every style decodes and comes back through the service's preprocessing as the same digit."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import default_data_dir, load_mnist
from training.upload_styles import STYLES, through_service


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_style_comes_back_close_to_the_digit(style: str) -> None:
    images, _ = load_mnist(default_data_dir(), "test")
    digits = images[:20].numpy()

    prepared, refused = through_service(digits, STYLES[style], seed=0)
    again, _ = through_service(digits, STYLES[style], seed=0)

    assert not refused.any()
    assert np.array_equal(prepared, again)
    difference = np.abs(prepared.astype(np.float64) - digits) / 255.0
    # Resampling, JPEG and noise change pixels, not the digit: on average within a tenth of the range.
    assert difference.mean() < 0.1
