"""Who may do what: roles, the actions they allow, and the one check every facade call makes.

Permission checks live here, in core, so the app, the HTTP API and the CLI cannot disagree about
what a viewer may do. Roles are ordered: each one may do everything the one before it may.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core.errors import Forbidden, InvalidRequest


class Role(str, enum.Enum):
    VIEWER = "viewer"  # read, search, export
    ANALYST = "analyst"  # + upload, label, decide on duplicates
    ADMIN = "admin"  # + delete and purge images, manage users


class Action(str, enum.Enum):
    READ = "read"  # browse, search, analyse, export
    UPLOAD = "upload"
    LABEL = "label"
    DECIDE = "decide"  # keep/remove decisions, keep rules
    DELETE = "delete images"  # soft delete and restore
    PURGE = "purge"  # delete for good
    MANAGE_USERS = "manage users"
    REPAIR = "repair"


_ORDER = (Role.VIEWER, Role.ANALYST, Role.ADMIN)
_LEAST_ROLE: dict[Action, Role] = {
    Action.READ: Role.VIEWER,
    Action.UPLOAD: Role.ANALYST,
    Action.LABEL: Role.ANALYST,
    Action.DECIDE: Role.ANALYST,
    Action.DELETE: Role.ADMIN,
    Action.PURGE: Role.ADMIN,
    Action.MANAGE_USERS: Role.ADMIN,
    Action.REPAIR: Role.ADMIN,
}


@dataclass(frozen=True)
class Actor:
    """The user a facade call acts for; recorded with every upload, label and decision."""

    name: str
    role: Role

    def may(self, action: Action) -> bool:
        return _ORDER.index(self.role) >= _ORDER.index(_LEAST_ROLE[action])


def require(actor: Actor, action: Action) -> None:
    """Raise :class:`Forbidden` unless ``actor``'s role allows ``action``."""
    if not actor.may(action):
        raise Forbidden(actor.name, actor.role.value, action.value)


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidRequest("role", f"{value!r} is not one of {', '.join(r.value for r in Role)}") from None
