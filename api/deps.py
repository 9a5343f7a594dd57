"""What a route needs from the app: the caller's view of the collection, and the app's own parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from api.auth import RateLimiter, TokenSigner, caller
from api.jobs import Jobs
from core import Collection


@dataclass(frozen=True)
class ApiState:
    collection: Collection  # acts as the process's admin: only to find users and the secret
    signer: TokenSigner
    limiter: RateLimiter
    jobs: Jobs


def state(request: Request) -> ApiState:
    return request.app.state.api


def current(request: Request, authorization: Annotated[str | None, Header()] = None) -> Collection:
    """The collection acting for the bearer token's user."""
    api = state(request)
    return caller(api.collection, api.signer, api.limiter, authorization)


Caller = Annotated[Collection, Depends(current)]
State = Annotated[ApiState, Depends(state)]
