"""One image in full: a dialog with the picture, its metadata and hashes, the names it arrived
under, its label (buttons that set it) and its nearest neighbours; reachable from every grid and
by link (``?image=ID``)."""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from core import LABELS, Collection, DomainError

NEIGHBOURS = 6
SEARCH_PAGE = "pages/2_Search.py"
LIKE_KEY = "search_like"  # the Search page searches for images like this one when it is set


def more_like_this(image_id: str) -> None:
    """Open Search with the images nearest to ``image_id``."""
    st.session_state[LIKE_KEY] = image_id
    st.switch_page(SEARCH_PAGE)


def label_buttons(current: Collection, image_id: str, label: str | None, key: str) -> None:
    """Buttons that set or clear an image's review label; the label persists in the catalog and the
    rerun the click causes shows it (the label is set in the click's callback, before the rerun)."""
    choices: list[str | None] = [*LABELS, None]
    for column, choice in zip(st.columns(len(choices)), choices, strict=True):
        name = choice or "clear"
        column.button(name, key=f"{key}-{name}", disabled=choice == label, width="stretch",
                      on_click=_set_label, args=(current, image_id, choice))


def _set_label(current: Collection, image_id: str, label: str | None) -> None:
    try:
        current.label(image_id, label)
    except (DomainError, KeyError, ValueError) as exc:
        st.toast(f"The label was not saved: {exc}")


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@st.dialog("Image", width="large")
def show_image_detail(current: Collection, image_id: str) -> None:
    records = current.images([image_id])
    if not records:
        st.error(f"No image with id {image_id} in the collection (it may have been removed).")
        return
    record = records[0]
    left, right = st.columns([3, 2])
    left.image(current.original(image_id), width="stretch")
    with right:
        st.text(record.file_name)
        st.dataframe(
            {
                "field": ["id", "source", "uploader", "arrived", "format", "size", "file size", "sha256",
                          "pixel sha256", "pHash", "dHash"],
                "value": [record.id, record.source, record.uploader, _when(record.created_at), record.format,
                          f"{record.width} x {record.height}", f"{record.size_bytes / 1024:.1f} KiB",
                          record.sha256, record.pixel_sha256, record.phash, record.dhash],
            },
            hide_index=True, width="stretch",
        )
        names = current.names(image_id)
        if len(names) > 1:
            st.caption("Also arrived as")
            st.dataframe([{"file": n.file_name, "source": n.source, "uploader": n.uploader} for n in names],
                         hide_index=True, width="stretch")
        label = current.labels().get(image_id)
        st.caption(f"Label: {label or 'none'}")
        label_buttons(current, image_id, label, key=f"detail-{image_id}")
        if st.button("More like this", key=f"detail-like-{image_id}", width="stretch"):
            more_like_this(image_id)
    neighbours = current.search(image_id=image_id, k=NEIGHBOURS).results
    if neighbours:
        st.caption("Nearest images")
        for column, hit in zip(st.columns(NEIGHBOURS), neighbours, strict=False):
            column.image(current.thumbnail(hit.image_id), width="stretch")
            column.text(f"{hit.score:.3f}  {hit.file_name}")
