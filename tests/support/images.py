"""Synthetic uploads for tests: the harness's drawn 7 in every encoding and mode the service accepts, MNIST
renderings, and hand-built hostile files (bombs, corrupt chunks, huge EXIF blocks)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from harness.images import canvas_drawing, centred_box, encode, photo_of_paper, seven, seven_mask

__all__ = [
    "animated_gif",
    "canvas_drawing",
    "centred_box",
    "encode",
    "exif_rotated_jpeg",
    "gif_header_claiming",
    "huge_exif",
    "photo_of_paper",
    "png_chunk",
    "png_header_claiming",
    "png_rgb16",
    "render_mnist",
    "seven",
    "seven_mask",
    "with_corrupt_crc",
    "with_exif_chunk",
]


def exif_rotated_jpeg(upright: Image.Image, orientation: int) -> bytes:
    """A JPEG whose pixels are stored turned, with the EXIF orientation tag that turns them back upright."""
    stored = {
        6: upright.transpose(Image.Transpose.ROTATE_90),
        8: upright.transpose(Image.Transpose.ROTATE_270),
        3: upright.transpose(Image.Transpose.ROTATE_180),
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored.convert("RGB"), "JPEG", quality=92, exif=exif.tobytes())


def animated_gif(first: Image.Image, frame_count: int) -> bytes:
    """``frame_count`` frames: ``first``, then pictures of a filled block, each one pixel different from the last
    (the encoder merges identical frames, and stores each frame as its small difference to the previous one)."""
    block = Image.new("L", first.size, 255)
    ImageDraw.Draw(block).rectangle((0, 0, first.width // 2, first.height // 2), fill=0)
    frames = [first.convert("P")]
    for index in range(frame_count - 1):
        frame = block.copy()
        frame.putpixel((first.width - 1 - index % first.width, first.height - 1 - index // first.width), 0)
        frames.append(frame.convert("P"))
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20, loop=0)


def png_chunk(chunk_type: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", zlib.crc32(chunk_type + data))


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG (valid CRCs) whose header declares ``width`` x ``height`` grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + png_chunk(b"IEND", b"")
    )


def png_rgb16(pixels: npt.NDArray[np.uint16]) -> bytes:
    """A 16-bit-per-sample RGB PNG of ``(H, W, 3)`` pixels (Pillow writes 16 bits only for grey)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def gif_header_claiming(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only image declare ``width`` x ``height`` (16-bit fields: at most 65,535)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return screen + descriptor + b"\x02\x02\x44\x01\x00\x3b"


def with_corrupt_crc(png: bytes) -> bytes:
    """The same PNG with one bit of the IHDR checksum flipped."""
    crc_offset = 8 + 8 + 13
    return png[:crc_offset] + bytes([png[crc_offset] ^ 0x01]) + png[crc_offset + 1 :]


def with_exif_chunk(png: bytes, exif: bytes) -> bytes:
    """Insert an ``eXIf`` chunk right after IHDR."""
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + png_chunk(b"eXIf", exif) + png[ihdr_end:]


def huge_exif(entry_count: int) -> bytes:
    """A little-endian TIFF-style EXIF block whose first IFD lists ``entry_count`` ASCII tags pointing past its end."""
    entries = b"".join(struct.pack("<HHII", 0x8000 + i % 0x7FFF, 2, 64, 0xFFFFFF00) for i in range(entry_count))
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", entry_count & 0xFFFF) + entries + b"\x00" * 4


def render_mnist(digit: npt.NDArray[np.uint8], rng: np.random.Generator, side: int = 300) -> bytes:
    """An MNIST digit as a user would upload it: inverted to black on white, scaled 4-9x, shifted, RGB JPEG."""
    size = int(digit.shape[0] * rng.uniform(4.0, 9.0))
    scaled = Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BILINEAR)
    page = Image.new("RGB", (side, side), (255, 255, 255))
    left, top = (int(v) for v in rng.integers(0, side - size + 1, size=2))
    page.paste(scaled.convert("RGB"), (left, top))
    return encode(page, "JPEG", quality=90)
