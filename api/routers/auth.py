"""Sign-in: a user name and password for a bearer token; who the token acts for."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Form

from api.deps import Caller, State
from core import record_login

router = APIRouter(prefix="/v1", tags=["auth"])


@router.post("/token", summary="Exchange a user name and password for an access token")
def token(username: Annotated[str, Form(max_length=200)], password: Annotated[str, Form(max_length=1000)],
          api: State) -> dict:
    actor = api.collection.authenticate(username, password)  # AuthenticationFailed -> 401
    record_login(actor.name, success=True)
    return asdict(api.signer.issue(actor.name))


@router.get("/me", summary="The user the token acts for, and their role")
def me(collection: Caller) -> dict:
    return {"name": collection.actor.name, "role": collection.actor.role.value}
