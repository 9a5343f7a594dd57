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


def page_key(key: str) -> str:
    """Where the page picker ``key`` keeps its page: set it (in a callback) to turn the page."""
    return f"{key}-page"


def page_of(count: int, key: str, per_page: int = PER_PAGE) -> range:
    """A page picker for ``count`` items; the range of the items on the chosen page. A page beyond
    the last (the items shrank: a slider moved, a filter narrowed) becomes the last."""
    pages = max(1, math.ceil(count / per_page))
    chosen = st.session_state.get(page_key(key))
    if chosen is not None and chosen > pages:
        st.session_state[page_key(key)] = pages
    if pages == 1:
        return range(count)
    left, right = st.columns([1, 5], vertical_alignment="center")
    page = left.number_input("Page", min_value=1, max_value=pages, step=1, key=page_key(key))
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
    thumbnails = current.thumbnail_sources([tile.image_id for tile in shown])
    for start in range(0, len(shown), columns):
        for column, tile in zip(st.columns(columns), shown[start:start + columns], strict=False):
            with column.container(border=True):
                if tile.image_id in thumbnails:
                    st.image(thumbnails[tile.image_id], width="stretch")
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
