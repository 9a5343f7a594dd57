"""Search: by text, by an example image, or "more like this" from any grid or detail view; k and a
minimum score; filters on source, uploader, format, arrival time and size; a grid with scores."""

from __future__ import annotations

from datetime import datetime, time, timezone

import streamlit as st

from core import IMAGE_FORMATS, DomainError, SearchFilter
from shared import acting_collection, empty_collection, load_model
from widgets.detail import LIKE_KEY
from widgets.grid import Tile, thumbnail_grid

MODES = ("Text", "Example image", "More like this")

current = acting_collection("search", "Search")
if empty_collection(current):
    st.stop()

requested = st.session_state.pop(LIKE_KEY, None)  # set by a "Similar" button on any page
if requested:
    st.session_state["search-like"] = requested
    st.session_state["search-mode"] = MODES[2]
like = st.session_state.get("search-like")
st.session_state.setdefault("search-mode", MODES[0])
mode = st.segmented_control("Search by", MODES, key="search-mode") or MODES[0]
query: dict[str, object] = {}
if mode == MODES[0]:
    text = st.text_input("Describe the images", placeholder="a red car at night", key="search-text")
    if text.strip():
        query = {"text": text}
elif mode == MODES[1]:
    example = st.file_uploader("An example image (not stored)", key="search-example")
    if example is not None:
        query = {"image": example.getvalue()}
elif like:
    found = current.images([like])
    st.text(f"Images like {found[0].file_name if found else like}")
    query = {"image_id": like}
else:
    st.caption('Press "Similar" on any image (here, on the Duplicates or Anomalies page, or in a detail view).')

controls = st.columns(2)
k = controls[0].slider("How many (k)", 1, 200, 24, key="search-k")
min_score = controls[1].slider("Minimum score (cosine)", -1.0, 1.0, -1.0, 0.01, key="search-min")
with st.expander("Filters"):
    left, middle, right = st.columns(3)
    sources = left.multiselect("Source", current.sources(), key="search-sources")
    formats = left.multiselect("Format", sorted(IMAGE_FORMATS), key="search-formats")
    uploader = middle.text_input("Uploader", key="search-uploader")
    arrived = middle.date_input("Arrived between", value=(), key="search-arrived")
    size_kib = right.number_input("Minimum file size (KiB)", min_value=0, value=0, key="search-min-size")
    max_kib = right.number_input("Maximum file size (KiB, 0 = any)", min_value=0, value=0, key="search-max-size")


def day_start(day: object, end: bool = False) -> float:
    return datetime.combine(day, time.max if end else time.min, tzinfo=timezone.utc).timestamp()


if not query:
    st.info("Type a description, drop an example image, or pick an image's \"Similar\" button to search.")
    st.stop()
filters = SearchFilter(
    sources=tuple(sources), uploaders=(uploader,) if uploader.strip() else (), formats=tuple(formats),
    created_from=day_start(arrived[0]) if len(arrived) >= 1 else None,
    created_to=day_start(arrived[-1], end=True) if len(arrived) >= 1 else None,
    min_size_bytes=int(size_kib * 1024) or None, max_size_bytes=int(max_kib * 1024) or None,
)
if "image_id" not in query and not load_model(current):
    st.stop()
try:
    response = current.search(**query, k=k, min_score=min_score, filters=filters)
except (DomainError, KeyError, ValueError) as exc:
    st.error(str(exc))
    st.stop()
st.caption(f"{len(response.results)} images for {response.query} ({response.seconds * 1000:.0f} ms)")
if not response.results:
    st.info("Nothing matches: lower the minimum score or loosen the filters.")
thumbnail_grid(current, [Tile(r.image_id, r.file_name, f"score {r.score:.3f} · {r.format} {r.width}x{r.height}")
                         for r in response.results], "search-grid")
