"""The contract between training and serving: the versioned store's format (``store``), the tensor signature every
model honours, the calibration and ensemble rule (``ensemble``), the TorchScript seam (``torchscript``) and device
selection (``device``). It imports nothing else of this project."""

from contract.store import (
    CHECK_CLASSES,
    CHECK_OUTPUT_SPEC,
    CONFIG_FILE,
    IMAGE_SIZE,
    LABELS,
    MANIFEST_FILE,
    MODEL_FILE,
    NUM_CLASSES,
    OUTPUT_SPEC,
    IntegrityError,
    Manifest,
    ManifestError,
    ModelCard,
    ModelKind,
    ModelNotFoundError,
    ModelStore,
    StoreError,
    TensorSpec,
    VerifiedModel,
    VersionNotFoundError,
)

__all__ = [
    "CHECK_CLASSES",
    "CHECK_OUTPUT_SPEC",
    "CONFIG_FILE",
    "IMAGE_SIZE",
    "LABELS",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "NUM_CLASSES",
    "OUTPUT_SPEC",
    "IntegrityError",
    "Manifest",
    "ManifestError",
    "ModelCard",
    "ModelKind",
    "ModelNotFoundError",
    "ModelStore",
    "StoreError",
    "TensorSpec",
    "VerifiedModel",
    "VersionNotFoundError",
]
