"""Upload helpers: a drawn 7 as PNG bytes and the multipart ``files=`` argument of a request."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def png_bytes(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def draw_seven(size: int = 96, ink: int = 0, paper: int = 255) -> Image.Image:
    """A hand-drawn style 7: dark strokes on light paper, as a phone photo or scan would have it."""
    image = Image.new("L", (size, size), paper)
    draw = ImageDraw.Draw(image)
    width = max(2, size // 12)
    draw.line([(size * 0.25, size * 0.2), (size * 0.75, size * 0.2)], fill=ink, width=width)
    draw.line([(size * 0.75, size * 0.2), (size * 0.4, size * 0.85)], fill=ink, width=width)
    return image


def upload(data: bytes, filename: str = "digit.png") -> dict[str, tuple[str, bytes, str]]:
    """The ``files=`` argument of a multipart upload in field ``file``."""
    return {"file": (filename, data, "application/octet-stream")}
