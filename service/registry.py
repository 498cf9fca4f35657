"""The model registry: finds each configured model's version in the store, verifies, loads and warms it up.

The served set is an immutable :class:`ModelSet` swapped atomically as a whole, so a batch always sees one
consistent set of versions. A version that fails any check is never served; the newest verified older version
stands in for a broken latest, and every refusal is kept in :class:`ModelStatus` and logged.
TorchScript itself is behind :mod:`contract.torchscript`, the one seam shared with the trainer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from contract import CHECK_CLASSES, IMAGE_SIZE, LINE_HEIGHT, NUM_CLASSES, Manifest, ModelStore, StoreError
from contract.torchscript import ScriptModule, load_torchscript, optimize_for_inference

logger = logging.getLogger(__name__)

Requested = int | Literal["latest"]
ModelState = Literal["serving", "fallback", "failed"]

# Seeded so the probe that checks the optimised graph against the stored one is the same on every load.
_PROBE_SEED = 0
# The optimised graph must reproduce the stored model's logits; fusing batch norm into convolutions changes
# rounding only, far below this.
_OPTIMIZED_ATOL = 1e-3
# The line reader's probe: a strip of 64 columns, about three digits.
_PROBE_LINE_WIDTH = 64


class ModelLoadError(Exception):
    """A verified file that is not a usable model; the message is safe to show (no paths, no torch internals)."""


@dataclass(frozen=True)
class LoadedModel:
    """One verified, warmed-up version: its manifest and the scripted module on the serving device.

    A front end that sends its inputs to an inference process holds the manifests only (``module`` None): it
    describes the served models but cannot run them.
    """

    manifest: Manifest
    module: ScriptModule | None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's output for ``batch``; only in the process that loaded it."""
        if self.module is None:
            raise RuntimeError(f"{self.name} v{self.version} runs in the inference process, not here")
        output: torch.Tensor = self.module(batch)
        return output

    def described(self) -> LoadedModel:
        """The manifest without the module: what a front end needs to know about a served model."""
        return LoadedModel(self.manifest, None)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version


@dataclass(frozen=True)
class ModelSet:
    """An immutable snapshot of the served models, in configuration order; a request uses exactly one."""

    models: Mapping[str, LoadedModel] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def __getitem__(self, name: str) -> LoadedModel:
        return self.models[name]

    def names(self) -> list[str]:
        """Every served model, whatever its kind."""
        return list(self.models)

    def classifiers(self) -> list[str]:
        """The digit classifiers (``/predict``'s models), told apart by their manifest's kind."""
        return [name for name, model in self.models.items() if model.manifest.kind == "digit_classifier"]

    def readers(self) -> list[str]:
        """The line readers (``/read``'s models)."""
        return [name for name, model in self.models.items() if model.manifest.kind == "line_reader"]

    @property
    def check(self) -> LoadedModel | None:
        """The digit check that says whether an image is one digit at all (the first one served), if any."""
        return next((model for model in self.models.values() if model.manifest.kind == "digit_check"), None)


@dataclass(frozen=True)
class ModelStatus:
    """What the registry did with one configured model and why (for ``/models`` and the log)."""

    name: str
    requested: Requested
    served: LoadedModel | None
    # Why the requested version, or newer ones for "latest", is not the one served.
    problems: tuple[str, ...] = ()

    @property
    def state(self) -> ModelState:
        if self.served is None:
            return "failed"
        return "fallback" if self.problems else "serving"


@dataclass(frozen=True)
class ModelChange:
    """A model whose served version changed during a refresh (``None``: nothing served)."""

    name: str
    old_version: int | None
    new_version: int | None


def _probe_batch(batch_size: int, device: torch.device, manifest: Manifest) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    if manifest.kind == "line_reader":
        shape = (batch_size, 1, LINE_HEIGHT, _PROBE_LINE_WIDTH)
    else:
        shape = (batch_size, 1, IMAGE_SIZE, IMAGE_SIZE)
    return torch.rand(shape, generator=generator).to(device)


def _expected_output(batch: torch.Tensor, manifest: Manifest) -> tuple[int, ...]:
    if manifest.kind == "digit_check":
        return (batch.shape[0], len(CHECK_CLASSES))
    if manifest.kind == "digit_classifier":
        return (batch.shape[0], NUM_CLASSES)
    return (batch.shape[0], batch.shape[3] // manifest.frame_pixels, NUM_CLASSES + 1)


def _checked_logits(module: ScriptModule, batch: torch.Tensor, manifest: Manifest) -> torch.Tensor:
    logits = module(batch)
    expected = _expected_output(batch, manifest)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelLoadError(f"output is {shape}, expected {expected} logits")
    if not torch.isfinite(logits).all():
        raise ModelLoadError("output contains NaN or infinite values")
    return logits


def _optimized(module: ScriptModule, name: str, probe: torch.Tensor, manifest: Manifest) -> ScriptModule:
    """The frozen, inference-optimised graph if it reproduces ``module`` on ``probe``, else ``module`` itself.

    Freezing folds batch norm into the convolutions and drops dropout: about 30 % less CPU per image for the
    convolutional models. PyTorch calls the pass a prototype that may not help every model, hence the check.
    """
    try:
        optimized = optimize_for_inference(module)
        if torch.allclose(_checked_logits(optimized, probe, manifest), module(probe), atol=_OPTIMIZED_ATOL):
            return optimized
        logger.warning("%s: the optimised graph changes the outputs; serving the graph as stored", name)
    except Exception:
        logger.warning("%s: graph optimisation failed; serving the graph as stored", name, exc_info=True)
    return module


def load_model(
    store: ModelStore,
    name: str,
    version: int,
    device: torch.device,
    *,
    warmup_batch_sizes: Sequence[int] = (1,),
) -> LoadedModel:
    """Verify ``name`` v``version`` against its manifest, load it onto ``device`` and warm it up.

    Raises :class:`contract.StoreError` for a missing, malformed or tampered version and
    :class:`ModelLoadError` for bytes that verify but are not a TorchScript module with the store's signature.
    Warm-up runs a forward pass at each of ``warmup_batch_sizes`` so the first requests do not pay for it.
    """
    verified = store.read_verified(name, version)
    label = f"{name} v{version}"
    with torch.inference_mode():
        try:
            module = load_torchscript(verified.model_bytes, device)
        except Exception:
            logger.warning("%s: torch.jit.load failed", label, exc_info=True)
            raise ModelLoadError(f"{label}: model.pt is not a loadable TorchScript module") from None
        try:
            manifest = verified.manifest
            module = _optimized(module, label, _probe_batch(max(warmup_batch_sizes), device, manifest), manifest)
            for batch_size in warmup_batch_sizes:
                _checked_logits(module, _probe_batch(batch_size, device, manifest), manifest)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{label}: warm-up failed: {exc}") from None
        except Exception:
            logger.warning("%s: warm-up forward pass failed", label, exc_info=True)
            raise ModelLoadError(f"{label}: warm-up forward pass failed") from None
    return LoadedModel(manifest=verified.manifest, module=module)


class ModelRegistry:
    """The configured models and the versions being served; :meth:`refresh` (re)loads from the store.

    ``names`` empty means every model in the store. ``pinned`` maps a name to the only version to serve;
    other models follow the store's latest version. Every digit check in the store is configured too (also
    beside explicit ``names``) unless ``digit_check`` is off. Served models are never dropped by a refresh: a
    model whose new version fails keeps serving the version it had.
    """

    def __init__(
        self,
        store: ModelStore,
        device: torch.device,
        *,
        names: Sequence[str] = (),
        pinned: Mapping[str, int] | None = None,
        warmup_batch_sizes: Sequence[int] = (1,),
        digit_check: bool = True,
    ) -> None:
        self.store = store
        self.device = device
        self._names = list(dict.fromkeys(names))
        self._pinned = dict(pinned or {})
        self._warmup_batch_sizes = tuple(warmup_batch_sizes)
        self._digit_check = digit_check
        self._models = ModelSet()
        self._statuses: dict[str, ModelStatus] = {}
        self._refresh_lock = threading.Lock()
        # Callers of reload() queue here rather than each holding a thread blocked on the lock above.
        self._reload_lock = asyncio.Lock()

    @property
    def models(self) -> ModelSet:
        """The current snapshot; hold on to it for the whole request."""
        return self._models

    @property
    def statuses(self) -> Mapping[str, ModelStatus]:
        return dict(self._statuses)

    def configured_names(self) -> list[str]:
        """The configured list, or every model in the store plus pinned and already served ones; the digit
        checks (in the store or served) beside them, or none when they are turned off."""
        current = self._models
        checks = set(self.store.model_names("digit_check")) - set(self.store.model_names("digit_classifier"))
        checks |= {name for name, model in current.models.items() if model.manifest.kind == "digit_check"}
        if self._names:
            names = list(self._names)
        else:
            names = sorted({*self.store.model_names(), *self._pinned, *current.names()} - checks)
        if self._digit_check:
            names += sorted(checks - set(names))
        return names

    def refresh(self) -> list[ModelChange]:
        """Resolve, verify and warm every configured model, then swap the served set at once (blocking).

        New versions load beside the old ones; requests keep the snapshot they started with, so nothing in
        flight changes version. Returns the models whose served version changed.
        """
        with self._refresh_lock:
            current = self._models
            statuses = {
                name: self._resolve(name, self._pinned.get(name, "latest"), current.models.get(name))
                for name in self.configured_names()
            }
            served = {name: status.served for name, status in statuses.items() if status.served is not None}
            self._models = ModelSet(served)
            previous, self._statuses = self._statuses, statuses
        changes = []
        for name, status in statuses.items():
            old = current.models.get(name)
            if old is not status.served:
                new_version = status.served.version if status.served is not None else None
                changes.append(ModelChange(name, old.version if old is not None else None, new_version))
            if previous.get(name) != status:
                _log_status(status)
        return changes

    async def reload(self) -> list[ModelChange]:
        """:meth:`refresh` in a worker thread, one at a time; the event loop keeps serving meanwhile."""
        async with self._reload_lock:
            return await asyncio.to_thread(self.refresh)

    def _resolve(self, name: str, requested: Requested, current: LoadedModel | None) -> ModelStatus:
        problems: list[str] = []
        try:
            if requested == "latest":
                candidates = list(reversed(self.store.versions(name)))
            else:
                candidates = [self.store.resolve(name, requested)]
        except StoreError as exc:
            candidates, problems = [], [str(exc)]
        except OSError:
            # OSError text carries host paths: the log gets it, /models a fixed sentence.
            logger.warning("model %s: its store folder cannot be listed", name, exc_info=True)
            candidates, problems = [], [f"model {name!r}: its folder in the store cannot be read"]
        if not candidates and not problems:
            problems.append(f"model {name!r} has no versions in the store")
        for version in candidates:
            if current is not None and current.version == version:
                return ModelStatus(name, requested, current, tuple(problems))
            try:
                loaded = load_model(self.store, name, version, self.device, warmup_batch_sizes=self._warmup_batch_sizes)
            except (StoreError, ModelLoadError) as exc:
                problems.append(str(exc))
                continue
            except OSError:
                # Unreadable files (permissions, a folder where a file belongs) refuse this version, not the refresh.
                logger.warning("%s v%d: its files cannot be read", name, version, exc_info=True)
                problems.append(f"{name} v{version}: its files cannot be read")
                continue
            return ModelStatus(name, requested, loaded, tuple(problems))
        return ModelStatus(name, requested, current, tuple(problems))


def _log_status(status: ModelStatus) -> None:
    served = status.served
    for problem in status.problems:
        logger.error("model %s: refused: %s", status.name, problem)
    if served is None:
        logger.error("model %s (%s) is not served", status.name, status.requested)
    else:
        level = logging.WARNING if status.problems else logging.INFO
        logger.log(level, "model %s: serving v%d (sha256 %s)", status.name, served.version, served.manifest.sha256)


async def watch_store(
    registry: ModelRegistry,
    interval_s: float,
    on_reload: Callable[[list[ModelChange]], None] | None = None,
) -> None:
    """Refresh ``registry`` every ``interval_s`` seconds until cancelled, passing each refresh's changes to
    ``on_reload``; a failing refresh is logged only."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            changes = await registry.reload()
        except Exception:
            logger.exception("periodic model refresh failed")
            continue
        if on_reload is not None:
            on_reload(changes)
