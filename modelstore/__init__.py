"""The versioned model store: its on-disk format, shared by the trainer (writer) and the service (reader)."""

from modelstore.store import (
    CONFIG_FILE,
    IMAGE_SIZE,
    LABELS,
    MANIFEST_FILE,
    MODEL_FILE,
    NUM_CLASSES,
    IntegrityError,
    Manifest,
    ManifestError,
    ModelNotFoundError,
    ModelStore,
    StoreError,
    TensorSpec,
    VerifiedModel,
    VersionNotFoundError,
)

__all__ = [
    "CONFIG_FILE",
    "IMAGE_SIZE",
    "LABELS",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "NUM_CLASSES",
    "IntegrityError",
    "Manifest",
    "ManifestError",
    "ModelNotFoundError",
    "ModelStore",
    "StoreError",
    "TensorSpec",
    "VerifiedModel",
    "VersionNotFoundError",
]
