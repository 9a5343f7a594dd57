"""The catalog's users table: who may sign in, with which role, and their bcrypt password hash.

Kept apart from the image tables: the same engine and transaction rules (one pooled connection per
operation), its own migration. Every write says whether the named user existed, so the facade can
answer "not found" without a second read.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

_metadata = sa.MetaData()

users = sa.Table(
    "users",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),  # bcrypt, "$2b$..."
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
)


def add_users_table(conn: Connection) -> None:
    """Migration: create the users table if it is not there yet (idempotent)."""
    users.create(conn, checkfirst=True)


@dataclass(frozen=True)
class UserRow:
    name: str
    role: str
    password_hash: str
    created_at: float
    disabled: bool


class UserTable:
    """Reads and writes of the users table over the catalog's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, row: UserRow) -> bool:
        """Insert ``row``; False (and nothing written) when the name is taken, even by a concurrent
        caller: two app replicas creating the first admin at once end with one."""
        insert = (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(users)
        stmt = insert.values(
            name=row.name, role=row.role, password_hash=row.password_hash, created_at=row.created_at,
            disabled=row.disabled,
        ).on_conflict_do_nothing(index_elements=[users.c.name]).returning(users.c.name)
        with self.engine.begin() as conn:
            return conn.execute(stmt).first() is not None

    def get(self, name: str) -> UserRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).first()
        return None if row is None else UserRow(**row._asdict())

    def all(self) -> list[UserRow]:
        with self.engine.connect() as conn:
            return [UserRow(**row._asdict()) for row in conn.execute(sa.select(users).order_by(users.c.name))]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())

    def update(self, name: str, **values: object) -> bool:
        """Set columns of one user; False when there is no such user."""
        with self.engine.begin() as conn:
            return conn.execute(users.update().where(users.c.name == name).values(**values)).rowcount == 1

    def remove(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(users.delete().where(users.c.name == name)).rowcount == 1
