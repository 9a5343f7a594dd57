"""The facade's domain errors: every expected failure of a facade call is one of these.

Callers map them once: the CLI to a one-line message and an exit code, the HTTP API to a problem
detail and a status (404, 422, 401, 403, 409/503), the app to a message on the page. Anything else that
escapes the facade is a bug and is logged with its traceback, never shown as "bad input".
Messages are written for the person at the other end: they say what happened and what to do, and
never carry SQL, parameters, credentials or stack frames.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every expected failure; ``str(error)`` is the user-facing sentence."""

    exit_code = 2
    http_status = 400
    title: str | None = None  # a problem title where the status's usual one would mislead


class NotFound(DomainError):
    """The named thing (an image, a user, a job) does not exist, or is not visible to this caller."""

    http_status = 404

    def __init__(self, what: str, key: str, hint: str = "") -> None:
        self.what, self.key = what, key
        super().__init__(f"No {what} {key!r}." + (f" {hint}" if hint else ""))


class InvalidRequest(DomainError):
    """A caller's value is unusable; ``field`` names the argument, ``reason`` says why."""

    http_status = 422

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"Invalid {field}: {reason}")


class NotConfigured(DomainError):
    """The call needs a backend this deployment does not use (presigned uploads need S3 blobs);
    ``needs`` names the settings that would enable it. A conflict with how the server is set up,
    not a server error: nothing is wrong with the server, and retrying will not help."""

    http_status = 409
    title = "Not configured"

    def __init__(self, feature: str, needs: str, instead: str) -> None:
        self.feature, self.needs = feature, needs
        super().__init__(f"{feature} needs {needs}, which this deployment does not use; {instead}")


class Forbidden(DomainError):
    """The acting user's role does not allow the action."""

    exit_code = 3
    http_status = 403

    def __init__(self, user: str, role: str, action: str) -> None:
        self.user, self.role, self.action = user, role, action
        super().__init__(f"User {user!r} ({role}) may not {action}.")


class AuthenticationFailed(DomainError):
    """A name and password do not match an enabled user. Deliberately one message for an unknown
    name, a wrong password and a disabled account, so a caller learns nothing about which."""

    exit_code = 3
    http_status = 401

    def __init__(self) -> None:
        super().__init__("Unknown user name or wrong password.")


class Busy(DomainError):
    """A resource is held by someone else (the embedded shard by another process, a value being
    computed); trying again after ``retry_after_s`` may succeed."""

    exit_code = 4
    http_status = 409

    def __init__(self, what: str, holder: str, retry_after_s: float) -> None:
        self.what, self.holder, self.retry_after_s = what, holder, retry_after_s
        super().__init__(f"{what} is busy ({holder}); try again in {retry_after_s:.0f} s.")


class Unavailable(DomainError):
    """A configured server (catalog, vectors, blobs, cache) does not answer; ``service`` names it."""

    exit_code = 5
    http_status = 503

    def __init__(self, service: str, detail: str) -> None:
        self.service, self.detail = service, detail
        super().__init__(f"{service} is unavailable: {detail}")
