"""Bearer tokens and the per-request caller.

A token is a JWT (HS256, signed with the collection's ``AUTH_SECRET``) naming the user and expiring
after ``API_TOKEN_TTL_S``. Each request re-reads the user from the catalog (``as_user``), so a
disabled account or a changed role takes effect at once, not when the token expires.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import jwt

from api.problems import ApiError
from core import Collection, DomainError

ALGORITHM = "HS256"


@dataclass(frozen=True)
class Token:
    access_token: str
    expires_at: int  # Unix seconds
    token_type: str = "bearer"


class TokenSigner:
    """Issues and checks the API's access tokens."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        self._secret, self._ttl_s = secret, ttl_s

    def issue(self, user: str, now: float | None = None) -> Token:
        issued = int(time.time() if now is None else now)
        expires = issued + self._ttl_s
        token = jwt.encode({"sub": user, "iat": issued, "exp": expires}, self._secret, algorithm=ALGORITHM)
        return Token(access_token=token, expires_at=expires)

    def user(self, token: str | None) -> str:
        """The user a bearer token names, or a 401 saying what is wrong with it."""
        challenge = {"WWW-Authenticate": 'Bearer realm="visual-anomaly"'}
        if not token:
            raise ApiError(401, "Authorization", "Send 'Authorization: Bearer <token>' (POST /v1/token gives one).",
                           challenge)
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "Authorization", "The token has expired; ask for a new one.", challenge) from None
        except jwt.PyJWTError:
            raise ApiError(401, "Authorization", "The token is not valid.", challenge) from None
        return str(claims["sub"])


class RateLimiter:
    """At most ``per_minute`` requests per user in any sliding minute; beyond, a 429 saying when to
    retry. In-process: with several workers each counts its own share."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, user: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            seen = self._seen.setdefault(user, deque())
            while seen and seen[0] <= now - 60.0:
                seen.popleft()
            if len(seen) >= self._per_minute:
                retry = max(1, int(seen[0] + 60.0 - now) + 1)
                raise ApiError(429, None, f"More than {self._per_minute} requests in a minute; retry in {retry} s.",
                               {"Retry-After": str(retry)})
            seen.append(now)


def caller(collection: Collection, signer: TokenSigner, limiter: RateLimiter, token: str | None) -> Collection:
    """The collection acting for the token's user (a 401 when the user no longer may sign in)."""
    name = signer.user(token)
    try:
        view = collection.as_user(name)
    except DomainError:
        raise ApiError(401, "Authorization", "The token's user no longer exists or is disabled.") from None
    limiter.check(name)
    return view
