"""Anomalies: a method and k, a selection by threshold, top N or contamination, the score histogram
with the threshold line, a paged ranked gallery with percentiles and label buttons that persist,
the map with the selection highlighted, and a CSV export of the selection with links back here.

The controls and everything they change live in one fragment: core caches the scores per method
and collection version, so a change re-reads nothing, and the page asks for the scores as arrays
and builds rows for the selected images only (all 100,000 rows cost a rerun more than a second).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import DEFAULT_ANOMALY_METHOD, DEFAULT_ANOMALY_TOP, METHODS, AnomaliesView, Collection, DomainError
from shared import acting_collection, csv_download, empty_collection, image_link
from widgets.charts import values_histogram
from widgets.detail import label_control
from widgets.grid import Tile, thumbnail_grid
from widgets.map import render_map

SELECT_BY = ("top N", "contamination (%)", "threshold (score)")
VIEWS = ("Ranked gallery", "Map")

current = acting_collection("anomalies", "Anomalies")


def controls(current: Collection) -> tuple[AnomaliesView, np.ndarray]:
    """The method, k and selection controls; the selected rows they ask core for, and every score."""
    method_col, k_col, by_col, value_col = st.columns(4)
    method = method_col.selectbox("Method", METHODS, index=list(METHODS).index(DEFAULT_ANOMALY_METHOD), key="anom-method")
    k = k_col.number_input("Neighbours (k)", min_value=1, max_value=100, value=None, placeholder="default",
                           help="Empty: the method's own default", key="anom-k")
    k = None if k is None else int(k)
    values = current.anomaly_scores(method=method, k=k).scores
    by = by_col.selectbox("Select by", SELECT_BY, key="anom-by")
    if by == SELECT_BY[0]:
        selection = {"top": int(value_col.number_input("N", min_value=1, value=DEFAULT_ANOMALY_TOP,
                                                       key="anom-top"))}
    elif by == SELECT_BY[1]:
        selection = {"contamination": value_col.slider("Percent of the collection", 0.1, 50.0, 2.0, 0.1,
                                                       key="anom-contamination")}
    else:
        lowest, highest = float(values.min()), float(values.max())
        selection = {"threshold": value_col.slider("Score at least", lowest, max(highest, lowest + 1e-6),
                                                   highest - (highest - lowest) / 10, key="anom-threshold")}
    return current.anomalies(method=method, k=k, selected_only=True, **selection), values


def export_rows(view: AnomaliesView) -> list[dict]:
    return [row | {"link": image_link(row["image_id"])} for row in view.to_rows(selected_only=True)]


@st.fragment
def triage(current: Collection) -> None:
    try:
        view, scores = controls(current)
    except (DomainError, ValueError) as exc:
        st.error(f"{exc}. Change the method or k.")
        return
    selected = view.rows
    line = min((r.score for r in selected), default=float(scores.max()) if len(scores) else 0.0)
    values_histogram(scores, line, x_title=f"{view.method} score (higher = more unusual)", key="anom-histogram")
    summary, export = st.columns([3, 2], vertical_alignment="bottom")
    summary.markdown(f"**{len(selected)}** of {len(scores)} images selected as anomalies ({view.method}"
                     f"{'' if view.k is None else f', k = {view.k}'}).")
    with export:
        csv_download("Export selection as CSV", export_rows(view), "anomalies.csv", key="anom-csv")
    if st.segmented_control("Show", VIEWS, default=VIEWS[0], key="anom-view") != VIEWS[1]:
        tiles = [Tile(r.image.image_id, r.image.file_name,
                      f"#{r.rank} · score {r.score:.3f} · {r.percentile:.1f} pct · {r.label or 'unlabelled'}"
                      + (f"  \n{'; '.join(r.reasons)}" if r.reasons else ""))
                 for r in selected]
        labels = {r.image.image_id: r.label for r in selected}
        if not tiles:
            st.info("Nothing selected: raise N or the percentage, or lower the threshold.")
        thumbnail_grid(current, tiles, "anom-grid", actions=lambda tile, key: label_control(
            current, tile.image_id, labels[tile.image_id], f"{key}-label"))
    else:  # only the view shown is built: the map of a large collection is the page's heaviest part
        render_map(current, "anom-map", colour="selection", highlight={r.image.image_id for r in selected})


if not empty_collection(current):
    triage(current)
