"""The catalog's side table of per-image properties (:mod:`core.image_properties`), one row per image.

A side table rather than columns of ``images``: the properties are an analysis input that older
catalogs lack until ``repair`` backfills them, and a new property is a new column here without
touching the table every ingest and review path writes. Rows are deleted with their image by the
catalog's own delete paths (pending rollback, purge); values are stored as double precision, exact
for the integer fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.image_properties import INTEGER_PROPERTIES, PROPERTY_NAMES, ImageProperties

_metadata = sa.MetaData()
COLUMN_PREFIX = "property_"  # how the properties are named in the catalog's frame of visible images

image_properties = sa.Table(
    "image_properties",
    _metadata,
    sa.Column("image_id", sa.String(36), primary_key=True),
    *(sa.Column(name, sa.Float, nullable=False) for name in PROPERTY_NAMES),
)


def add_properties_table(conn: Connection) -> None:
    """Migration: create the properties table if it is not there yet (idempotent)."""
    image_properties.create(conn, checkfirst=True)


def property_rows(found: Mapping[str, ImageProperties]) -> list[dict[str, Any]]:
    """Rows to insert, in key order (concurrent writers then lock in the same order)."""
    return [{"image_id": image_id, **{k: float(v) for k, v in found[image_id].to_dict().items()}}
            for image_id in sorted(found)]


def from_row(row: Mapping[str, Any]) -> ImageProperties:
    return ImageProperties(**{name: int(row[name]) if name in INTEGER_PROPERTIES else float(row[name])
                              for name in PROPERTY_NAMES})


def frame_columns() -> list[sa.ColumnElement]:
    """The properties as columns of a query joined to ``images`` (NULL where an image has none yet)."""
    return [image_properties.c[name].label(COLUMN_PREFIX + name) for name in PROPERTY_NAMES]
