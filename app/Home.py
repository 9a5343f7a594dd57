"""Home: what the collection holds, how it grew, whether its stores are healthy, how far review
got, and the map, from which a box or lasso selection becomes a grid, bulk labels and a CSV."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import LABELS, Action
from shared import acting_collection, csv_download, empty_collection, image_link, may
from widgets.grid import Tile, thumbnail_grid
from widgets.map import render_map

STORE_COUNTS_MAX_AGE_S = 300  # counting blobs lists the store; a visit reuses a recent count

current = acting_collection("home", "Visual anomaly dashboard")
status = current.status(blob_counts_max_age_s=STORE_COUNTS_MAX_AGE_S)
cols = st.columns(5)
cols[0].metric("Images", status.images)
cols[1].metric("Removed", status.removed, help="Soft-deleted: hidden everywhere, restorable, still stored (vectors "
               "and originals count them) until purged.")
cols[2].metric("Vectors", status.vectors)
cols[3].metric("Originals", status.blobs)
cols[4].metric("Pending", status.pending)
if not status.cache_healthy:
    st.warning(f"The cache ({status.backends['cache']}) cannot be reached: everything works, but slower.")
if not status.consistent:
    st.warning("The stores disagree or an ingest was interrupted: run the same ingest again, or "
               "`visual-anomaly repair`.")
st.subheader("Stores")
st.table({"store": list(status.backends), "where": list(status.backends.values())})
st.caption(f"Originals were counted within the last {STORE_COUNTS_MAX_AGE_S // 60} minutes and after the last "
           "change (counting lists the blob store).")
st.subheader("Growth")
days = current.growth()
if days:
    st.bar_chart(pd.DataFrame(days, columns=["day", "images"]).set_index("day"), height=220)
else:
    st.caption("No images yet.")

if not empty_collection(current):
    labels = current.labels()
    duplicates = current.duplicates()
    st.subheader("Review")
    review = st.columns(len(LABELS) + 2)
    for column, label in zip(review, LABELS, strict=False):
        column.metric(f"Labelled {label}", sum(v == label for v in labels.values()))
    review[-2].metric("Not labelled", status.images - len(labels))
    review[-1].metric("Duplicate clusters decided",
                      f"{sum(duplicates.is_decided(g) for g in duplicates.groups)} of {len(duplicates.groups)}")

    st.subheader("Map")
    st.caption("Drag a box or a lasso over points to select images; double-click the map to clear.")
    chosen = render_map(current, "home-map")
    if chosen:
        records = {r.id: r for r in current.images(chosen)}
        selection = [{"image_id": i, "file_name": records[i].file_name, "source": records[i].source,
                      "label": labels.get(i, ""), "link": image_link(i)} for i in chosen if i in records]
        st.subheader(f"Selection: {len(selection)} images")
        bulk = st.columns([2, 2, 2, 3])
        for column, label in zip(bulk, [*LABELS, None] if may(current, Action.LABEL) else [], strict=False):
            if column.button(f"Label all as {label}" if label else "Clear all labels", key=f"home-bulk-{label}"):
                for row in selection:
                    current.label(row["image_id"], label)
                st.rerun()
        with bulk[-1]:
            csv_download("Export selection as CSV", selection, "selection.csv", key="home-selection-csv")
        thumbnail_grid(current, [Tile(r["image_id"], r["file_name"], r["label"]) for r in selection], "home-grid")
