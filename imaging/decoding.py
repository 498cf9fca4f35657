"""Untrusted bytes to a decoded, upright, 8-bit grey image: type sniffing, the pixel limit, the first frame, EXIF
orientation, the libspng fast path for PNGs, and any mode (bilevel, palette, alpha, 16-bit, float) to grey.

Every decoder failure becomes one of :mod:`imaging.errors`; nothing else escapes :func:`decode_image` or
:func:`to_grayscale`, whatever the bytes.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import pyspng
from PIL import (
    BmpImagePlugin,
    ExifTags,
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from imaging.errors import ImageTooLargeError, InvalidImageError, UnsupportedImageTypeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeLimits:
    """Per-call decoding limits; nothing here touches Pillow's process-wide settings."""

    # width * height as declared by the header; checked before any pixel data is decoded.
    max_image_pixels: int

    def __post_init__(self) -> None:
        if self.max_image_pixels <= 0:
            raise ValueError("max_image_pixels must be positive")


# Magic numbers of the accepted types: the bytes decide, never a file name or a Content-Type.
_OPENERS: tuple[tuple[tuple[bytes, ...], type[ImageFile.ImageFile]], ...] = (
    ((b"\x89PNG\r\n\x1a\n",), PngImagePlugin.PngImageFile),
    ((b"\xff\xd8\xff",), JpegImagePlugin.JpegImageFile),
    ((b"GIF87a", b"GIF89a"), GifImagePlugin.GifImageFile),
    ((b"BM",), BmpImagePlugin.BmpImageFile),
    ((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), TiffImagePlugin.TiffImageFile),
)
# What Pillow's decoders raise on hostile input. Warnings are listed too: they only arrive as exceptions when the
# process turns warnings into errors, and then the file is refused rather than half-decoded.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    struct.error,
    zlib.error,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    NotImplementedError,
    AssertionError,
    Warning,
)
# PNG layouts libspng decodes to exactly what Pillow would (Pillow calls 16-bit grey "I;16"; pyspng cannot give
# grey with alpha); a ``tRNS`` transparency key stays with Pillow, which applies it in to_grayscale.
_SPNG_MODES = frozenset({"L", "RGB", "RGBA"})
# Everywhere Pillow reads a PNG's orientation from (an eXIf chunk, ImageMagick's raw EXIF text, XMP), in or after
# the header: such files stay with Pillow. Text-chunk keywords are never compressed, so a byte search finds them.
_PNG_ORIENTATION_MARKERS = (b"eXIf", b"Raw profile type exif", b"XML:com.adobe.xmp")
_TOO_LARGE_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError)
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _sniff_opener(data: bytes) -> type[ImageFile.ImageFile]:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WebPImagePlugin.WebPImageFile
    for signatures, opener in _OPENERS:
        if data.startswith(signatures):
            return opener
    raise UnsupportedImageTypeError


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate as the camera said (the ``ImageOps.exif_transpose`` table); a broken EXIF block means upright."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (*_DECODE_ERRORS, RecursionError):
        logger.debug("unreadable EXIF block ignored")
        return image
    method = _ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None
    return image if method is None else image.transpose(method)


def _load_pixels(image: ImageFile.ImageFile, data: bytes) -> Image.Image:
    """The decoded image: grey, RGB and RGBA PNGs with no transparency key and no orientation through libspng,
    the rest by Pillow.

    libspng decodes such a PNG to the same pixels in about half of Pillow's time, and the web page's canvas upload
    (an RGBA PNG) is the service's commonest input, for which decoding was the largest cost. The image it returns
    carries no metadata, hence Pillow for files that state an orientation.
    """
    mode = image.mode
    simple_png = isinstance(image, PngImagePlugin.PngImageFile) and mode in _SPNG_MODES
    stated_orientation = any(marker in data for marker in _PNG_ORIENTATION_MARKERS)
    if simple_png and "transparency" not in image.info and not stated_orientation:
        try:
            # ``format`` asks for 8-bit samples, as Pillow gives for 16-bit RGB(A).
            return Image.fromarray(pyspng.load(data, format=mode))
        except RuntimeError:  # how pyspng reports a corrupt, truncated or over-limit file
            raise InvalidImageError from None
    image.load()
    return image


def decode_image(data: bytes, limits: DecodeLimits, *, draft_side_pixels: int | None = None) -> Image.Image:
    """Decode the first frame of a PNG, JPEG, BMP, GIF, WEBP or TIFF, upright, in its own mode.

    The pixel limit is checked on the header's size before any pixel data is decoded, so a file claiming
    50,000 x 50,000 pixels costs nothing. With ``draft_side_pixels`` a JPEG may be decoded at 1/2, 1/4 or 1/8
    scale (by libjpeg, almost for free) as long as its longer side stays at least that long.
    Raises :class:`UnsupportedMediaTypeError` (not an accepted image type), :class:`ImageTooLargeError` or
    :class:`InvalidImageError` (empty, corrupt or truncated); nothing else.
    """
    if not data:
        raise InvalidImageError
    opener = _sniff_opener(data)
    try:
        # The plugin class parses only the header; Image.open would also apply Pillow's global bomb limit.
        image = opener(io.BytesIO(data))
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise ImageTooLargeError
        if width < 1 or height < 1:
            raise InvalidImageError
        if draft_side_pixels is not None and isinstance(image, JpegImagePlugin.JpegImageFile):
            scale = max(width, height) / draft_side_pixels
            draft_mode = "L" if image.mode == "RGB" else image.mode
            image.draft(draft_mode, (max(1, int(width / scale)), max(1, int(height / scale))))
        decoded = _load_pixels(image, data)
    except _TOO_LARGE_ERRORS:
        raise ImageTooLargeError from None
    except _DECODE_ERRORS:
        raise InvalidImageError from None
    return _apply_exif_orientation(decoded)


def _mean_level(histogram: npt.NDArray[np.intp]) -> float:
    return float(histogram @ np.arange(histogram.size)) / max(int(histogram.sum()), 1)


def _extrema(band: Image.Image) -> tuple[float, float]:
    # A single-band image's extrema are one (low, high) pair; Pillow's annotation also covers multi-band images.
    low, high = cast(tuple[float, float], band.getextrema())
    return float(low), float(high)


def _stretch_to_grey(image: Image.Image) -> Image.Image:
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        image = Image.fromarray(values)
    else:
        image = image.convert("I")
    low, high = _extrema(image)
    if not high > low:
        return Image.new("L", image.size, 0)
    scale = 255.0 / (high - low)
    return image.point(lambda value: value * scale - low * scale).convert("L")


def _has_light_strokes(lum: Image.Image, alpha: Image.Image) -> bool:
    coverage = _mean_level(np.asarray(alpha.histogram())) / 255.0
    return coverage < 0.5 and _mean_level(np.asarray(lum.histogram(mask=alpha))) > 127.5


def _composite(image: Image.Image) -> Image.Image:
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    lum = rgba.convert("L")
    # White ink drawn on a transparent canvas (a dark-themed page) would vanish on white: sparse, light strokes
    # go on black instead. Dark ink and opaque pages go on white.
    light_strokes = _extrema(lum)[1] > 127 and _has_light_strokes(lum, rgba.getchannel("A"))
    grey = Image.new("L", rgba.size, 0 if light_strokes else 255)
    grey.paste(lum, mask=rgba)
    return grey


def to_grayscale(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit grey ("L"); transparency is composited onto a contrasting backdrop (white for dark ink).

    High-bit-depth and float images have no fixed white point, so they are stretched to their own range.
    Raises :class:`InvalidImageError` for a colour space Pillow cannot convert (TIFF LAB, for instance).
    """
    mode = image.mode
    try:
        if mode in ("I", "F") or mode.startswith("I;16"):
            return _stretch_to_grey(image)
        if mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in image.info:
            return _composite(image)
        return image if mode == "L" else image.convert("L")
    except _DECODE_ERRORS:
        raise InvalidImageError from None
