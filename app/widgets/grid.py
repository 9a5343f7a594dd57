"""A paged thumbnail grid: one page of tiles at a time, so a page never sends more thumbnails than
it shows, whatever the number of images behind it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import streamlit as st

from core import Collection
from widgets.detail import more_like_this, show_image_detail

COLUMNS = 4  # tiles stay readable at 1024 px wide with the sidebar open
PER_PAGE = 16


@dataclass(frozen=True)
class Tile:
    image_id: str
    file_name: str  # shown as text, never as markup
    caption: str = ""  # the page's own words (score, rank, ...)


def thumbnail_source(current: Collection, image_id: str) -> bytes | str:
    """A URL the browser loads directly when the blob store gives one (S3), else the bytes."""
    return current.thumbnail_url(image_id) or current.thumbnail(image_id)


def page_of(count: int, key: str, per_page: int = PER_PAGE) -> range:
    """A page picker for ``count`` items; the range of the items on the chosen page."""
    pages = max(1, math.ceil(count / per_page))
    if pages == 1:
        return range(count)
    left, right = st.columns([1, 5], vertical_alignment="center")
    page = left.number_input("Page", min_value=1, max_value=pages, value=1, step=1, key=f"{key}-page")
    right.caption(f"of {pages} ({count} images, {per_page} a page)")
    start = (int(page) - 1) * per_page
    return range(start, min(count, start + per_page))


def thumbnail_grid(
    current: Collection,
    tiles: Sequence[Tile],
    key: str,
    *,
    actions: Callable[[Tile, str], None] | None = None,
    per_page: int = PER_PAGE,
    columns: int = COLUMNS,
) -> list[Tile]:
    """Render one page of ``tiles`` (details and "more like this" on each, plus the caller's
    ``actions(tile, key)``); returns the tiles shown."""
    shown = [tiles[i] for i in page_of(len(tiles), key, per_page)]
    for start in range(0, len(shown), columns):
        for column, tile in zip(st.columns(columns), shown[start:start + columns], strict=False):
            with column.container(border=True):
                st.image(thumbnail_source(current, tile.image_id), width="stretch")
                st.text(tile.file_name)
                if tile.caption:
                    st.caption(tile.caption)
                tile_key = f"{key}-{tile.image_id}"
                if st.button("Details", key=f"{tile_key}-detail", width="stretch"):
                    show_image_detail(current, tile.image_id)
                if st.button("Similar", key=f"{tile_key}-like", width="stretch"):
                    more_like_this(tile.image_id)
                if actions is not None:
                    actions(tile, tile_key)
    return shown
