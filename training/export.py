"""TorchScript export of a trained network, its eager-vs-scripted check, and publication into the model store.

The only training module that touches ``torch.jit``: the store's format (Triton's ``pytorch_libtorch``) is
TorchScript, and a later move to ``torch.export`` should change this module and the service's loader only.
"""

from __future__ import annotations

import copy
import io
import logging
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelstore import DIGIT_CLASSIFIER, MODEL_FILE, Manifest, ModelStore, Signature

logger = logging.getLogger(__name__)

# The scripted graph must reproduce the eager logits to this absolute tolerance (float32 round-off only).
EXPORT_TOLERANCE = 1e-4
# How many test images the check runs: enough to cover every class many times, cheap on a CPU.
CHECK_IMAGES = 512


class ExportMismatchError(RuntimeError):
    """The reloaded TorchScript model does not reproduce the eager model's logits."""


@contextmanager
def _torchscript() -> Iterator[None]:
    # torch.jit warns that TorchScript is deprecated; it is still the format Triton's PyTorch backend serves.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def to_torchscript(net: nn.Module) -> bytes:
    """The serialized TorchScript of ``net`` (a CPU copy in eval mode; ``net`` itself is untouched)."""
    frozen = copy.deepcopy(net).cpu().eval()
    buffer = io.BytesIO()
    with _torchscript():
        torch.jit.save(torch.jit.script(frozen), buffer)
    return buffer.getvalue()


def load_torchscript(data: bytes) -> torch.jit.ScriptModule:
    """A scripted model from its bytes, on the CPU, in eval mode."""
    with _torchscript():
        module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
            io.BytesIO(data), map_location="cpu"
        )
    return module.eval()


def check_export(net: nn.Module, scripted: bytes, images: torch.Tensor) -> float:
    """Max absolute logit difference between ``net`` and the reloaded ``scripted`` on ``images`` (a model input batch).

    Raises :class:`ExportMismatchError` above :data:`EXPORT_TOLERANCE`.
    """
    eager_net = copy.deepcopy(net).cpu().eval()
    reloaded = load_torchscript(scripted)
    with torch.inference_mode():
        difference = float((eager_net(images) - reloaded(images)).abs().max())
    if difference > EXPORT_TOLERANCE:
        raise ExportMismatchError(f"scripted logits differ from eager by {difference:.2e} > {EXPORT_TOLERANCE}")
    return difference


def git_commit(repo: Path) -> str | None:
    """The checked-out commit of ``repo`` (suffixed ``-dirty`` with uncommitted changes), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if status.strip() else commit


def publish_model(
    store: ModelStore,
    name: str,
    net: nn.Module,
    check_images: torch.Tensor,
    *,
    temperature: float,
    ensemble_weight: float,
    metrics: Mapping[str, Any],
    training_config: Mapping[str, Any],
    data_checksums: Mapping[str, str],
    commit: str | None,
    extra_files: Mapping[str, bytes],
    signature: Signature = DIGIT_CLASSIFIER,
) -> Manifest:
    """Script ``net``, check it against eager on ``check_images``, and publish it as the next version of ``name``."""
    scripted = to_torchscript(net)
    difference = check_export(net, scripted, check_images)
    logger.info("%s: TorchScript matches eager within %.1e on %d images", name, difference, len(check_images))
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / MODEL_FILE
        model_file.write_bytes(scripted)
        manifest = store.publish(
            name,
            model_file,
            parameters=sum(p.numel() for p in net.parameters()),
            metrics={**metrics, "export_max_abs_diff": difference},
            training_config=training_config,
            temperature=temperature,
            ensemble_weight=ensemble_weight,
            data_checksums=data_checksums,
            git_commit=commit,
            torch_version=torch.__version__,
            extra_files=extra_files,
            signature=signature,
        )
    logger.info("published %s v%d (%d bytes) to %s", name, manifest.version, manifest.size_bytes, store.root)
    return manifest
