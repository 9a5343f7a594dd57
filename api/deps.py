"""What a route needs from the app: the caller's view of the collection, and the app's own parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import RateLimiter, TokenSigner, caller
from core import Collection


@dataclass(frozen=True)
class ApiState:
    collection: Collection  # acts as the process's admin: only to find users and the secret
    signer: TokenSigner
    limiter: RateLimiter


def state(request: Request) -> ApiState:
    return request.app.state.api


_bearer = HTTPBearer(auto_error=False, description="An access token from POST /v1/token")


def current(request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Collection:
    """The collection acting for the bearer token's user."""
    api = state(request)
    return caller(api.collection, api.signer, api.limiter, None if credentials is None else credentials.credentials)


Caller = Annotated[Collection, Depends(current)]
State = Annotated[ApiState, Depends(state)]
