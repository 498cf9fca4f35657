"""``/health``: liveness (the event loop answers) and readiness (models verified and warmed, not shutting down)."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import StateDep
from service.errors import ServiceUnavailableError
from service.schemas import LiveResponse, ReadyResponse, error_responses

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=LiveResponse)
async def live() -> LiveResponse:
    """The process is up and its event loop answers."""
    return LiveResponse()


@router.get("/ready", response_model=ReadyResponse, responses=error_responses(ServiceUnavailableError))
async def ready(state: StateDep) -> ReadyResponse:
    """200 with the served versions once a model is loaded, verified and warm; 503 before that and when stopping."""
    if not state.ready:
        raise ServiceUnavailableError()
    served = state.registry.models.models
    return ReadyResponse(models=list(served), versions={name: model.version for name, model in served.items()})
