"""The model store format: ``<root>/<name>/config.pbtxt`` and ``<root>/<name>/<version>/{model.pt,manifest.json}``.

The layout is a Triton Inference Server model repository (``pytorch_libtorch`` platform), so the same folder can be
served by Triton; ``manifest.json`` is ours. This module is the only definition of the format: the trainer publishes
through :meth:`ModelStore.publish` and the service loads through :meth:`ModelStore.read_verified`.
Publishing is atomic (write into a hidden temporary folder, fsync, rename) and never overwrites a version.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The input contract of every exported model: MNIST's 28x28 grey images, ten digit classes.
IMAGE_SIZE = 28
NUM_CLASSES = 10
LABELS = list(range(NUM_CLASSES))

MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.pbtxt"
_TMP_PREFIX = ".tmp-"
_LOCK_FILE = ".publish.lock"
# Names become folder names and URL path segments: keep them to a safe alphabet so no request can leave the store.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Triton's default for the batch dimension; the service's own batch size is a separate setting.
# A line reader's variable width, at its Triton warm-up.
_TRITON_WARMUP_VARIABLE_DIM = 64
_TRITON_MAX_BATCH_SIZE = 256
# Triton's dynamic batcher set up as the service batches by default (DIGITS_MAX_BATCH_SIZE, DIGITS_MAX_BATCH_WAIT_MS,
# DIGITS_QUEUE_MAX_SIZE); tests/contract/test_triton_config.py checks that they agree.
_TRITON_PREFERRED_BATCH_SIZE = 16
_TRITON_MAX_QUEUE_DELAY_US = 2000
_TRITON_MAX_QUEUE_SIZE = 128


class StoreError(Exception):
    """Base of all store failures; the message says which model and version, never a host path."""


class ModelNotFoundError(StoreError):
    """No model of that name in the store (or an invalid name)."""


class VersionNotFoundError(StoreError):
    """The model exists but not the requested version."""


class ManifestError(StoreError):
    """A version folder whose manifest is missing or malformed (for example half-written by a crash)."""


class IntegrityError(StoreError):
    """model.pt does not match the sha256 recorded in its manifest."""


class TensorSpec(BaseModel):
    """One tensor of the model's signature, batch dimension excluded (Triton's convention)."""

    model_config = ConfigDict(frozen=True)

    name: str
    dims: list[int]
    dtype: Literal["float32"] = "float32"
    description: str


INPUT_SPEC = TensorSpec(
    name="input__0",
    dims=[1, IMAGE_SIZE, IMAGE_SIZE],
    description="grey image in [0, 1], white digit on black (MNIST polarity), 20x20 box centred by mass",
)
OUTPUT_SPEC = TensorSpec(name="output__0", dims=[NUM_CLASSES], description="logits for digits 0-9")
# The line reader's strip height (see imaging.lines) and its CTC classes: the blank, then the ten digits.
LINE_HEIGHT = 32
LINE_INPUT_SPEC = TensorSpec(
    name="input__0",
    dims=[1, LINE_HEIGHT, -1],
    description="one line of digits in [0, 1], light ink on black, 32 px high, width a multiple of 4 (zero-padded)",
)
LINE_OUTPUT_SPEC = TensorSpec(
    name="output__0",
    dims=[-1, NUM_CLASSES + 1],
    description="per frame of frame_pixels columns (manifest), CTC logits: index 0 the blank, index d + 1 the digit d",
)
# The digit check's classes, in the order of its logits: is a 28x28 input one handwritten digit at all?
CHECK_CLASSES = ("one digit", "several digits", "not a digit")
CHECK_OUTPUT_SPEC = TensorSpec(
    name="output__0", dims=[len(CHECK_CLASSES)], description="logits for: one digit, several digits, not a digit"
)
# What a model does, read from its manifest (never from its name): the service serves each kind on its own route,
# and the digit check beside the digit classifiers.
ModelKind = Literal["digit_classifier", "line_reader", "digit_check"]


@dataclass(frozen=True)
class Signature:
    """A kind of model and its tensors: what a publisher puts in its card's ``kind``, ``input`` and ``output``."""

    kind: ModelKind
    input: TensorSpec
    output: TensorSpec


DIGIT_CLASSIFIER = Signature("digit_classifier", INPUT_SPEC, OUTPUT_SPEC)
LINE_READER = Signature("line_reader", LINE_INPUT_SPEC, LINE_OUTPUT_SPEC)
DIGIT_CHECK = Signature("digit_check", INPUT_SPEC, CHECK_OUTPUT_SPEC)


class ModelCard(BaseModel):
    """What the publisher states about a model; the store adds name, version, time and checksum on publish."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    torch_version: str
    parameters: int = Field(ge=0)
    # Manifests written before line readers existed describe digit classifiers.
    kind: ModelKind = "digit_classifier"
    input: TensorSpec = INPUT_SPEC
    output: TensorSpec = OUTPUT_SPEC
    labels: list[int] = Field(default_factory=lambda: list(LABELS))
    # Divide logits by this before softmax: fitted on the validation split so confidences are calibrated.
    temperature: float = Field(default=1.0, gt=0)
    # Weight of this model's calibrated log-probabilities in the ensemble (see contract.ensemble).
    ensemble_weight: float = Field(default=1.0, ge=0)
    # Digit check only: an image passes as one digit when its calibrated probability of "one digit" reaches this
    # (chosen on the validation split, see training.check).
    pass_threshold: float | None = Field(default=None, gt=0, lt=1)
    # Line readers only: input columns per output frame (versions published before the field existed used 4).
    frame_pixels: int = Field(default=4, gt=0)
    # Line readers only: (slope, intercept) of the logistic map from the best path's log-probability (at the
    # temperature) to the probability that the whole string is right, fitted on validation lines (Platt 1999).
    # None (versions published before the field existed): the best path's probability itself.
    string_calibration: tuple[float, float] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_config: dict[str, Any] = Field(default_factory=dict)
    data_checksums: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None


class Manifest(ModelCard):
    """Everything a reader needs to trust and describe one published version (``manifest.json``)."""

    name: str
    version: int = Field(gt=0)
    created: datetime
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


@dataclass(frozen=True)
class VerifiedModel:
    """A version's manifest and the model bytes whose sha256 matched it (read once: no check-then-use race)."""

    manifest: Manifest
    model_bytes: bytes


def signature_of(card: ModelCard) -> Signature:
    """The kind and tensors a card (or a manifest) states."""
    return Signature(card.kind, card.input, card.output)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def triton_config(name: str, signature: Signature = DIGIT_CLASSIFIER) -> str:
    """The Triton ``config.pbtxt`` for a model of ``signature`` (-1 marks a variable dimension, as in Triton).

    Like the service: the latest version only, batches preferred at the service's size after at most its wait,
    a bounded queue (beyond it Triton refuses at once), and warm-up at batch 1 and that size before serving.
    """
    in_dims = ", ".join(str(d) for d in signature.input.dims)
    out_dims = ", ".join(str(d) for d in signature.output.dims)
    # Warm-up inputs need concrete sizes: a variable dimension (a line's width) is warmed up at 64.
    warm_dims = ", ".join(str(d if d > 0 else _TRITON_WARMUP_VARIABLE_DIM) for d in signature.input.dims)
    warmups = "".join(
        f'  {{ name: "batch_{size}" batch_size: {size} inputs {{ key: "{signature.input.name}" '
        f"value {{ data_type: TYPE_FP32 dims: [ {warm_dims} ] random_data: true }} }} }}{sep}\n"
        for size, sep in ((1, ","), (_TRITON_PREFERRED_BATCH_SIZE, ""))
    )
    return (
        f'name: "{name}"\n'
        'platform: "pytorch_libtorch"\n'
        f"max_batch_size: {_TRITON_MAX_BATCH_SIZE}\n"
        "version_policy { latest { num_versions: 1 } }\n"
        f'input [{{ name: "{signature.input.name}" data_type: TYPE_FP32 dims: [ {in_dims} ] }}]\n'
        f'output [{{ name: "{signature.output.name}" data_type: TYPE_FP32 dims: [ {out_dims} ] }}]\n'
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {_TRITON_PREFERRED_BATCH_SIZE} ]\n"
        f"  max_queue_delay_microseconds: {_TRITON_MAX_QUEUE_DELAY_US}\n"
        f"  default_queue_policy {{ max_queue_size: {_TRITON_MAX_QUEUE_SIZE} }}\n"
        "}\n"
        f"model_warmup [\n{warmups}]\n"
    )


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class ModelStore:
    """A store rooted at one folder. Every name and version is validated before it touches the file system."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- addressing -------------------------------------------------------------------------------------------

    def model_dir(self, name: str) -> Path:
        if not _NAME_RE.fullmatch(name):
            raise ModelNotFoundError(f"invalid model name {name!r}: use lower-case letters, digits and '_'")
        return self.root / name

    def version_dir(self, name: str, version: int) -> Path:
        if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
            raise VersionNotFoundError(f"invalid version {version!r} of {name!r}: versions are positive integers")
        return self.model_dir(name) / str(version)

    # -- reading ----------------------------------------------------------------------------------------------

    def model_names(self, kind: ModelKind | None = None) -> list[str]:
        """Models with at least one version folder, sorted; with ``kind``, only those whose newest readable
        manifest is of that kind (a model with none is listed, so whoever loads it can report why)."""
        if not self.root.is_dir():
            return []
        names = sorted(p.name for p in self.root.iterdir() if _NAME_RE.fullmatch(p.name) and self.versions(p.name))
        return names if kind is None else [name for name in names if self.kind_of(name) in (kind, None)]

    def kind_of(self, name: str) -> ModelKind | None:
        """The kind stated by the newest version with a readable manifest, or None when there is none."""
        for version in reversed(self.versions(name)):
            try:
                return self.read_manifest(name, version).kind
            except (StoreError, OSError):
                continue
        return None

    def versions(self, name: str) -> list[int]:
        """All version folders, ascending, complete or not (a reader must still verify each)."""
        folder = self.model_dir(name)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)

    def resolve(self, name: str, version: int | Literal["latest"] = "latest") -> int:
        """A concrete version number: the newest for ``"latest"``, else the pinned one if it exists."""
        available = self.versions(name)
        if not available:
            raise ModelNotFoundError(f"model {name!r} has no versions in the store")
        if version == "latest":
            return available[-1]
        if version not in available:
            raise VersionNotFoundError(f"model {name!r} has no version {version}; available: {available}")
        return version

    def read_manifest(self, name: str, version: int) -> Manifest:
        path = self.version_dir(name, version) / MANIFEST_FILE
        try:
            manifest = Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise ManifestError(f"{name} v{version}: {MANIFEST_FILE} is missing (incomplete publish?)") from None
        except (ValidationError, ValueError):
            raise ManifestError(f"{name} v{version}: {MANIFEST_FILE} is malformed") from None
        if manifest.name != name or manifest.version != version:
            raise ManifestError(f"{name} v{version}: manifest describes {manifest.name} v{manifest.version}")
        return manifest

    def read_verified(self, name: str, version: int) -> VerifiedModel:
        """Manifest plus model bytes, or :class:`StoreError` if anything does not match."""
        manifest = self.read_manifest(name, version)
        try:
            data = (self.version_dir(name, version) / MODEL_FILE).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{name} v{version}: {MODEL_FILE} is missing") from None
        if sha256_bytes(data) != manifest.sha256:
            raise IntegrityError(f"{name} v{version}: {MODEL_FILE} does not match the sha256 in its manifest")
        return VerifiedModel(manifest=manifest, model_bytes=data)

    # -- writing ----------------------------------------------------------------------------------------------

    @contextmanager
    def _publish_lock(self, name: str) -> Iterator[None]:
        folder = self.model_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / _LOCK_FILE).open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def publish(
        self, name: str, model_bytes: bytes, card: ModelCard, *, extra_files: Mapping[str, bytes] | None = None
    ) -> Manifest:
        """Publish ``model_bytes`` with ``card`` as the next version of ``name`` and return its manifest.

        Files are written and fsynced in a hidden temporary folder beside the versions, then renamed into place
        under an exclusive lock, so readers only ever see complete versions and concurrent publishers get
        distinct version numbers. ``extra_files`` (reports, plots) go beside the model. The checksum is verified
        again after the rename.
        """
        folder = self.model_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            _write_durably(staging / MODEL_FILE, model_bytes)
            for file_name, data in (extra_files or {}).items():
                if file_name in (MODEL_FILE, MANIFEST_FILE) or "/" in file_name or file_name.startswith("."):
                    raise ValueError(f"extra file name {file_name!r} is reserved or not a plain file name")
                _write_durably(staging / file_name, data)
            with self._publish_lock(name):
                existing = self.versions(name)
                version = (existing[-1] if existing else 0) + 1
                manifest = Manifest(
                    **card.model_dump(),
                    name=name,
                    version=version,
                    created=datetime.now(UTC),
                    sha256=sha256_bytes(model_bytes),
                    size_bytes=len(model_bytes),
                )
                _write_durably(staging / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
                _fsync_path(staging)
                target = self.version_dir(name, version)
                os.rename(staging, target)
                _fsync_path(folder)
                self._write_triton_config(name, signature_of(card))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.read_verified(name, version)
        return manifest

    def _write_triton_config(self, name: str, signature: Signature) -> None:
        folder = self.model_dir(name)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TMP_PREFIX)
        with os.fdopen(fd, "wb") as handle:
            handle.write(triton_config(name, signature).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / CONFIG_FILE)

    def prune(self, name: str, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` versions; return the deleted version numbers."""
        if keep < 1:
            raise ValueError("keep must be at least 1: pruning never empties a model")
        with self._publish_lock(name):
            doomed = self.versions(name)[:-keep]
            for version in doomed:
                shutil.rmtree(self.version_dir(name, version))
        return doomed
