"""The one TorchScript seam: scripting a network to bytes, loading bytes back, and optimising a loaded graph.

The store's format is TorchScript because it is what Triton's PyTorch backend (``pytorch_libtorch``) serves.
This torch release marks every ``torch.jit`` entry point deprecated in favour of ``torch.export``; the warning is
silenced here, and only here, so the rest of the code base runs with warnings as errors. Moving the store to
``torch.export`` (``torch.export.export`` + ``torch.export.save``/``load``, served by Triton's
``pytorch_libtorch`` successor or AOTInductor) means changing this module and the store's platform string.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

ScriptModule = torch.jit.ScriptModule


@contextmanager
def _deprecation_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def to_torchscript(net: nn.Module) -> bytes:
    """The serialized TorchScript of ``net`` (a CPU copy in eval mode; ``net`` itself is untouched)."""
    frozen = copy.deepcopy(net).cpu().eval()
    buffer = io.BytesIO()
    with _deprecation_silenced():
        torch.jit.save(torch.jit.script(frozen), buffer)
    return buffer.getvalue()


def load_torchscript(data: bytes, device: torch.device | str = "cpu") -> ScriptModule:
    """A scripted model from its bytes, on ``device``, in eval mode. Raises whatever ``torch.jit.load`` raises."""
    with _deprecation_silenced():
        module: ScriptModule = torch.jit.load(io.BytesIO(data), map_location=device)  # type: ignore[no-untyped-call]
    return module.eval()


def optimize_for_inference(module: ScriptModule) -> ScriptModule:
    """Freeze ``module`` and fold batch norm into convolutions (``torch.jit.optimize_for_inference``)."""
    with _deprecation_silenced():
        return torch.jit.optimize_for_inference(module)
