"""``Annotated`` dependency aliases: how routes receive the app's collaborators from the lifespan state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.engine import Registry
from service.errors import ServiceUnavailableError
from service.state import AppState
from service.telemetry import Telemetry

STATE_KEY = "service"


# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in its thread pool.
async def get_state(request: Request) -> AppState:
    """The lifespan's state; 503 before start-up has finished or after shutdown."""
    state = getattr(request.state, STATE_KEY, None)
    if not isinstance(state, AppState):
        raise ServiceUnavailableError()
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_registry(state: StateDep) -> Registry:
    return state.registry


async def get_telemetry(state: StateDep) -> Telemetry:
    return state.telemetry


RegistryDep = Annotated[Registry, Depends(get_registry)]
TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
