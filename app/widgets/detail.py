"""One image in full: a dialog with the picture, its metadata and hashes, the names it arrived
under, its label (buttons that set it) and its nearest neighbours; reachable from every grid and
by link (``?image=ID``)."""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from core import LABELS, Action, Collection, DomainError

NEIGHBOURS = 6
SEARCH_PAGE = "pages/2_Search.py"
LIKE_KEY = "search_like"  # the Search page searches for images like this one when it is set
LABEL_MARKS = {"anomaly": "⚠ anomaly", "normal": "✓ normal"}


def more_like_this(image_id: str) -> None:
    """Open Search with the images nearest to ``image_id``."""
    st.session_state[LIKE_KEY] = image_id
    st.switch_page(SEARCH_PAGE)


def label_control(current: Collection, image_id: str, label: str | None, key: str) -> None:
    """The image's review label as a two-way switch (anomaly / normal; click the chosen one again
    to clear it); the change is stored in the catalog before the rerun it causes."""
    if not current.actor.may(Action.LABEL):
        return  # the label is shown beside the image; a viewer cannot change it
    if key not in st.session_state:
        st.session_state[key] = label
    st.segmented_control("Label", LABELS, key=key, label_visibility="collapsed", on_change=_set_label,
                         args=(current, image_id, key), format_func=lambda label: LABEL_MARKS.get(label, label),
                         width="stretch")


def _set_label(current: Collection, image_id: str, key: str) -> None:
    try:
        current.label(image_id, st.session_state[key])
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
        label_control(current, image_id, label, key=f"detail-label-{image_id}")
        if st.button("More like this", key=f"detail-like-{image_id}", width="stretch"):
            more_like_this(image_id)
    neighbours = current.search(image_id=image_id, k=NEIGHBOURS).results
    if neighbours:
        st.caption("Nearest images")
        for column, hit in zip(st.columns(NEIGHBOURS), neighbours, strict=False):
            column.image(current.thumbnail(hit.image_id), width="stretch")
            column.text(f"{hit.score:.3f}  {hit.file_name}")
