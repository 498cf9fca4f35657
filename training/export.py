"""Export of a trained network through the contract's TorchScript seam, its eager-vs-scripted check, and
publication into the model store."""

from __future__ import annotations

import copy
import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contract import DIGIT_CLASSIFIER, Manifest, ModelCard, ModelStore, Signature
from contract.torchscript import load_torchscript, to_torchscript

logger = logging.getLogger(__name__)

# The scripted graph must reproduce the eager logits to this absolute tolerance (float32 round-off only).
EXPORT_TOLERANCE = 1e-4
# How many test images the check runs: enough to cover every class many times, cheap on a CPU.
CHECK_IMAGES = 512


class ExportMismatchError(RuntimeError):
    """The reloaded TorchScript model does not reproduce the eager model's logits."""


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
    pass_threshold: float | None = None,
    frame_pixels: int = 4,
    string_calibration: tuple[float, float] | None = None,
) -> Manifest:
    """Script ``net``, check it against eager on ``check_images``, and publish it as the next version of ``name``."""
    scripted = to_torchscript(net)
    difference = check_export(net, scripted, check_images)
    logger.info("%s: TorchScript matches eager within %.1e on %d images", name, difference, len(check_images))
    card = ModelCard(
        torch_version=torch.__version__,
        parameters=sum(p.numel() for p in net.parameters()),
        kind=signature.kind,
        input=signature.input,
        output=signature.output,
        temperature=temperature,
        pass_threshold=pass_threshold,
        frame_pixels=frame_pixels,
        string_calibration=string_calibration,
        ensemble_weight=ensemble_weight,
        metrics={**metrics, "export_max_abs_diff": difference},
        training_config=dict(training_config),
        data_checksums=dict(data_checksums),
        git_commit=commit,
    )
    manifest = store.publish(name, scripted, card, extra_files=extra_files)
    logger.info("published %s v%d (%d bytes) to %s", name, manifest.version, manifest.size_bytes, store.root)
    return manifest
