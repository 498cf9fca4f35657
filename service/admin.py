"""The guard of admin endpoints (model reload, and any that change what is served): a bearer token.

No ``DIGITS_ADMIN_TOKEN``: every admin endpoint answers 404, as if it did not exist. With one: no bearer token
answers 401, another token 403; tokens are compared in constant time, so timing says nothing about the right one.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.deps import StateDep
from service.errors import AdminDisabledError, AdminTokenInvalidError, AdminTokenMissingError

# auto_error off: the service's own errors (and messages) answer, not FastAPI's; the scheme still documents the
# header in OpenAPI, so /docs offers "Authorize".
_bearer = HTTPBearer(auto_error=False, description="the value of DIGITS_ADMIN_TOKEN")


async def require_admin(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Let the request through only with the configured admin token."""
    expected = state.settings.admin_token
    if expected is None:
        raise AdminDisabledError()
    if credentials is None:
        raise AdminTokenMissingError()
    if not hmac.compare_digest(credentials.credentials.encode(), expected.get_secret_value().encode()):
        raise AdminTokenInvalidError()


ADMIN_ONLY = [Depends(require_admin)]
ADMIN_ERRORS = (AdminTokenMissingError, AdminTokenInvalidError, AdminDisabledError)
