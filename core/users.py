"""Users of a collection: accounts in the catalog, bcrypt passwords, sign-in and the first admin.

Passwords are hashed with bcrypt (the ``$2b$`` format streamlit-authenticator also reads), so the
app's login widget and the API's token endpoint check the same hashes. Sign-in takes the same time
whether the name exists or not, and says the same thing for an unknown name, a wrong password and
a disabled account. The facade (:class:`core.collection.Collection`) checks who may call what; this
module only keeps the accounts.
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from core import validation
from core.access import Actor, Role, parse_role
from core.errors import AuthenticationFailed, Forbidden, InvalidRequest, NotFound
from core.storage.catalog_users import UserRow, UserTable

FIRST_ADMIN = "admin"
INITIAL_PASSWORD_FILE = "initial-admin-password"


@dataclass(frozen=True)
class User:
    """An account as callers see it (never its password hash)."""

    name: str
    role: Role
    created_at: float
    disabled: bool

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role.value, "created_at": self.created_at, "disabled": self.disabled}


def hash_password(password: str) -> str:
    return bcrypt.hashpw(validation.password(password).encode(), bcrypt.gensalt()).decode()


@functools.cache
def _decoy_hash() -> str:
    """A hash checked when the name is unknown, so a miss costs as long as a wrong password."""
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt()).decode()


def _password_matches(password: str, hashed: str | None) -> bool:
    candidate = password.encode()[: validation.MAX_PASSWORD_BYTES]
    matches = bcrypt.checkpw(candidate, (hashed or _decoy_hash()).encode())
    return matches and hashed is not None


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by the owner only (mode 0600), even when
    the file existed with a wider mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class UserDirectory:
    """The accounts in one catalog, with every argument checked and every miss a domain error."""

    def __init__(self, table: UserTable) -> None:
        self.table = table

    def _row(self, name: str) -> UserRow:
        row = self.table.get(validation.user_name(name))
        if row is None:
            raise NotFound("user", name)
        return row

    def add(self, name: str, role: Role | str, password: str) -> User:
        row = UserRow(validation.user_name(name), _role(role).value, hash_password(password), time.time(), False)
        if not self.table.add(row):
            raise InvalidRequest("name", f"a user named {row.name!r} already exists")
        return _user(row)

    def all(self) -> list[User]:
        return [_user(row) for row in self.table.all()]

    def set_password(self, name: str, password: str) -> None:
        hashed = hash_password(password)
        if not self.table.update(self._row(name).name, password_hash=hashed):
            raise NotFound("user", name)

    def disable(self, name: str) -> None:
        row = self._row(name)
        self._keep_an_admin(row, "disabled")
        self.table.update(row.name, disabled=True)

    def remove(self, name: str) -> None:
        row = self._row(name)
        self._keep_an_admin(row, "removed")
        if not self.table.remove(row.name):
            raise NotFound("user", name)

    def _keep_an_admin(self, row: UserRow, what: str) -> None:
        """Nobody could manage users again once the last enabled admin is gone."""
        admins = [r.name for r in self.table.all() if r.role == Role.ADMIN.value and not r.disabled]
        if admins == [row.name]:
            raise InvalidRequest("name", f"{row.name!r} is the last enabled admin and cannot be {what}; add another admin first")

    def actor(self, name: str) -> Actor:
        """The enabled user ``name`` as an actor."""
        row = self._row(name)
        if row.disabled:
            raise Forbidden(row.name, row.role, "act: the account is disabled")
        return Actor(row.name, Role(row.role))

    def authenticate(self, name: str, password: str) -> Actor:
        try:
            row = self.table.get(validation.user_name(name))
        except InvalidRequest:
            row = None
        matched = isinstance(password, str) and _password_matches(password, row.password_hash if row else None)
        if row is None or not matched or row.disabled:
            raise AuthenticationFailed()
        return Actor(row.name, Role(row.role))

    def ensure_admin(self, data_dir: Path) -> str | None:
        """With no user at all, create ``admin`` with a random password, write it to
        ``DATA_DIR/initial-admin-password`` (mode 0600) and return it; otherwise None. When two
        processes race, one creates the admin and the other returns None."""
        if self.table.count():
            return None
        password = secrets.token_urlsafe(18)
        row = UserRow(FIRST_ADMIN, Role.ADMIN.value, hash_password(password), time.time(), False)
        if not self.table.add(row):
            return None
        write_private_file(Path(data_dir) / INITIAL_PASSWORD_FILE, password + "\n")
        return password

    def login_credentials(self) -> dict[str, dict[str, dict[str, object]]]:
        """Enabled users in the shape streamlit-authenticator's ``Authenticate(credentials=...)``
        takes: ``{"usernames": {name: {"name", "password" (bcrypt hash), "roles"}}}``."""
        return {
            "usernames": {
                row.name: {"name": row.name, "password": row.password_hash, "roles": [row.role]}
                for row in self.table.all()
                if not row.disabled
            }
        }


def _role(role: Role | str) -> Role:
    return role if isinstance(role, Role) else parse_role(role)


def _user(row: UserRow) -> User:
    return User(row.name, Role(row.role), row.created_at, bool(row.disabled))
