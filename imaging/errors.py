"""Why an image could not be prepared. Plain exceptions with no arguments, so they pickle across the worker
processes that run preprocessing; the service maps each one to an HTTP status and a message at its edge."""

from __future__ import annotations


class ImagingError(Exception):
    """Base of everything the imaging package raises about its input."""


class UnsupportedImageTypeError(ImagingError):
    """The bytes are not one of the accepted image types (sniffed from the bytes, never a file name)."""


class ImageTooLargeError(ImagingError):
    """The header declares more pixels than the caller's limit, or decoding ran out of memory."""


class InvalidImageError(ImagingError):
    """Empty, corrupt or truncated data, or a colour space that cannot be converted to grey."""


class NoDigitFoundError(ImagingError):
    """Nothing stands out from the background as ink."""
