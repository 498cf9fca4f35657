"""``/models``: what the registry serves (manifests from the store), what it refused and why, and hot reload."""

from __future__ import annotations

from fastapi import APIRouter

from service.admin import ADMIN_ERRORS, ADMIN_ONLY
from service.deps import RegistryDep
from service.engine import Registry
from service.errors import InvalidRequestError, ModelNotFoundHTTPError, ServiceUnavailableError
from service.registry import LoadedModel, ModelStatus
from service.schemas import (
    ModelChangeInfo,
    ModelInfo,
    ModelsResponse,
    ReloadResponse,
    UnavailableModel,
    error_responses,
)

router = APIRouter(tags=["models"])
# /models/reload is declared before /models/{name}: Starlette matches in order, and a 405 for the reload path
# must advertise POST, not the GET of the by-name route.


def _model_info(status: ModelStatus, served: LoadedModel) -> ModelInfo:
    manifest = served.manifest
    return ModelInfo(
        name=manifest.name,
        version=manifest.version,
        state="fallback" if status.problems else "serving",
        problems=list(status.problems),
        created=manifest.created,
        sha256=manifest.sha256,
        size_bytes=manifest.size_bytes,
        parameters=manifest.parameters,
        torch_version=manifest.torch_version,
        kind=manifest.kind,
        input=manifest.input,
        output=manifest.output,
        labels=manifest.labels,
        temperature=manifest.temperature,
        ensemble_weight=manifest.ensemble_weight,
        pass_threshold=manifest.pass_threshold,
        metrics=manifest.metrics,
        training_config=manifest.training_config,
    )


def _models_response(registry: Registry) -> ModelsResponse:
    statuses = registry.statuses.values()
    return ModelsResponse(
        device=str(registry.device),
        models=[_model_info(status, status.served) for status in statuses if status.served is not None],
        unavailable=[
            UnavailableModel(name=status.name, requested_version=status.requested, problems=list(status.problems))
            for status in statuses
            if status.served is None
        ],
    )


@router.get("/models", response_model=ModelsResponse, responses=error_responses(ServiceUnavailableError))
async def list_models(registry: RegistryDep) -> ModelsResponse:
    """The served models with their manifests, and the configured models that cannot be served, with reasons."""
    return _models_response(registry)


@router.post(
    "/models/reload",
    response_model=ReloadResponse,
    responses=error_responses(*ADMIN_ERRORS, ServiceUnavailableError),
    dependencies=ADMIN_ONLY,
)
async def reload_models(registry: RegistryDep) -> ReloadResponse:
    """Admin: load new store versions beside the served ones, verify and warm them, then swap them in atomically."""
    changes = await registry.reload()
    current = _models_response(registry)
    return ReloadResponse(
        device=current.device,
        models=current.models,
        unavailable=current.unavailable,
        changes=[ModelChangeInfo(name=c.name, old_version=c.old_version, new_version=c.new_version) for c in changes],
    )


@router.get(
    "/models/{name}",
    response_model=ModelInfo,
    responses=error_responses(ModelNotFoundHTTPError, InvalidRequestError, ServiceUnavailableError),
)
async def get_model(name: str, registry: RegistryDep) -> ModelInfo:
    """One served model: version, checksum, parameter count, input spec, metrics and training config."""
    status = registry.statuses.get(name)
    if status is None or status.served is None:
        raise ModelNotFoundHTTPError()
    return _model_info(status, status.served)
