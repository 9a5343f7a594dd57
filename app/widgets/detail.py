"""One image in full (``Collection.image_detail``): a dialog with the picture, its metadata, hashes
and analysis, the names it arrived under, its label (buttons that set it) and decision with who and
when, the history of its decisions and its nearest neighbours; reachable from every grid and by
link (``?image=ID``)."""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from core import LABELS, Action, Collection, DomainError, ImageDetail

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
    try:
        detail = current.image_detail(image_id)
    except DomainError:
        st.error(f"No image with id {image_id} in the collection (it may have been purged).")
        return
    first = detail.names[0]
    review = detail.review
    left, right = st.columns([3, 2])
    if review.visible:
        left.image(current.original(image_id), width="stretch")
    else:
        left.info(f"Removed from the collection by {review.removed_by} on {_when(review.removed_at)}; an admin "
                  "can restore it.")
    with right:
        st.text(first.file_name)
        st.dataframe(_fields(detail), hide_index=True, width="stretch")
        if len(detail.names) > 1:
            st.caption("Arrived as")
            st.dataframe([{"file": n.file_name, "source": n.source, "uploader": n.uploader, "when": _when(n.added_at)}
                          for n in detail.names], hide_index=True, width="stretch")
        st.caption("Label: " + (f"{review.label} (by {review.labelled_by}, {_when(review.labelled_at)})"
                                if review.label else "none"))
        label_control(current, image_id, review.label, key=f"detail-label-{image_id}")
        st.caption("Decision: " + (f"{review.decision} (by {review.decided_by}, {_when(review.decided_at)})"
                                   if review.decision else "none"))
        history = current.decision_history(image_id)
        if history:
            st.dataframe([{"when": _when(e.decided_at), "who": e.decided_by, "decision": e.decision or "cleared",
                           "before": e.previous or ""} for e in reversed(history)],
                         hide_index=True, width="stretch", height=min(36 * (len(history) + 1), 180))
        if review.visible and st.button("More like this", key=f"detail-like-{image_id}", width="stretch"):
            more_like_this(image_id)
    neighbours = detail.neighbours[:NEIGHBOURS]
    if neighbours:
        st.caption("Nearest images (similarity on the calibrated scale, 1 = identical)")
        thumbnails = current.thumbnail_sources([n.image_id for n in neighbours])
        for column, hit in zip(st.columns(NEIGHBOURS), neighbours, strict=False):
            if hit.image_id in thumbnails:
                column.image(thumbnails[hit.image_id], width="stretch")
            column.text(f"{hit.similarity:.3f}  {hit.file_name}")


def _fields(detail: ImageDetail) -> dict[str, list[str]]:
    """The detail's metadata, hashes and analysis as a two-column table."""
    first = detail.names[0]
    rows = {
        "id": detail.image_id, "source": first.source, "uploader": detail.uploader,
        "arrived": _when(detail.created_at), "format": detail.format, "size": f"{detail.width} x {detail.height}",
        "file size": f"{detail.size_bytes / 1024:.1f} KiB", "sha256": detail.sha256, "pHash": detail.phash,
        "dHash": detail.dhash,
    }
    if detail.anomaly_score is not None:
        rows["anomaly score"] = (f"{detail.anomaly_score:.4f} ({detail.anomaly_method}), rank {detail.anomaly_rank}, "
                                 f"percentile {detail.anomaly_percentile:.1f}")
    if detail.reasons:
        rows["why unusual"] = "; ".join(detail.reasons)
    for flag in detail.flags:
        rows[f"issue: {flag.name}"] = f"{flag.explanation} ({flag.property} {flag.value:.4g}, z {flag.z:+.1f})"
    if detail.cluster_id is not None:
        rows["duplicate cluster"] = f"{detail.cluster_id} ({len(detail.cluster_members)} images)"
    return {"field": list(rows), "value": list(rows.values())}
