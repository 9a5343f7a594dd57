"""The map: every image at its UMAP position (Plotly scattergl), coloured by what a control picks;
box or lasso selection returns image ids (carried in ``customdata``), never positions.

Beyond ``SCATTER_LIMIT`` points the map draws a density layer of every image and a scatter of an
even sample on top (see the README's measurement): selection then picks among the sampled points.
The density is binned here, so the browser receives a small grid, not every position.
"""

from __future__ import annotations

import html
from collections.abc import Collection as Set
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import Collection

SCATTER_LIMIT = 15_000  # at 100,000 images: all drawn 5.3 s, a sample of 25,000 3.3 s, of 15,000 2.8 s (README)
DENSITY_BINS = 96  # per axis, for the density layer under a sample
NAMED_CLUSTERS = 10  # the largest duplicate clusters get their own colour; the rest share one
COLOURS = {
    "anomaly score": "score",
    "source": "source",
    "duplicate cluster": "cluster",
    "label": "label",
    "decision": "decision",
}
GREY = "#c8c8c8"


@st.cache_resource(max_entries=2, show_spinner="Placing the images on the map…")
def _points(_current: Collection, version: int) -> pd.DataFrame:
    """Positions and what colours them, per collection version (labels and decisions are joined
    per render: they change without a new version)."""
    view = _current.projection()
    cluster = pd.Series(view.cluster_id)
    return pd.DataFrame({
        "image_id": view.image_id,
        "name": view.file_name,
        "x": view.x,
        "y": view.y,
        "source": view.source,
        "score": view.anomaly_score,
        "cluster": np.where(cluster == 0, "none", np.where(cluster <= NAMED_CLUSTERS, "cluster " + cluster.astype(str),
                                                            "other cluster")),
    })


def map_points(current: Collection, highlight: Set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The points to draw (every image up to ``SCATTER_LIMIT``, else an even sample) with the current
    labels and decisions (and, when given, which are highlighted), and every image's position. Only
    drawn points are joined and escaped: at a million images doing it for all cost most of a render."""
    frame = _points(current, current.version())
    drawn = frame if len(frame) <= SCATTER_LIMIT else frame.sample(SCATTER_LIMIT, random_state=0)
    drawn = drawn.assign(name=drawn["name"].map(html.escape),  # hover text is Plotly markup
                         label=_joined(drawn["image_id"], current.labels()),
                         decision=_joined(drawn["image_id"], {i: r.decision for i, r in current.decisions().items()}))
    if highlight is not None:
        drawn = drawn.assign(selection=np.where(drawn["image_id"].isin(list(highlight)), "selected", "other"))
    return drawn, frame


def _joined(ids: pd.Series, values: Mapping[str, str]) -> np.ndarray:
    """``values`` by image id, "none" for the rest."""
    out = np.full(len(ids), "none", dtype=object)
    if values:
        hit = ids.isin(values.keys()).to_numpy()
        out[hit] = [values[i] for i in ids[hit]]
    return out


def map_figure(drawn: pd.DataFrame, colour: str, everything: pd.DataFrame | None = None) -> go.Figure:
    """Scattergl of the ``drawn`` points coloured by column ``colour``; where they are a sample of
    ``everything``, over a density layer of all of them. Unselected points turn grey while a
    selection exists."""
    discrete = {"other": GREY, "none": GREY, "other cluster": "#8c8c8c", "selected": "#d62728", "keep": "#2ca02c",
                "remove": "#d62728"}
    figure = px.scatter(
        drawn, x="x", y="y", color=colour, hover_name="name", custom_data=["image_id"],
        hover_data={"x": False, "y": False, "source": True, "score": ":.3f", "cluster": True, "label": True,
                    "decision": True},
        render_mode="webgl", color_continuous_scale="Viridis", color_discrete_map=discrete,
        labels={"score": "anomaly score"},
    )
    if everything is not None and len(everything) > len(drawn):
        figure.add_trace(density_layer(everything["x"].to_numpy(), everything["y"].to_numpy()))
        figure.data = (figure.data[-1], *figure.data[:-1])  # drawn first: under the points
    figure.update_traces(marker={"size": 5 if len(drawn) > 5000 else 8},
                         unselected={"marker": {"color": GREY, "opacity": 0.3}}, selector={"type": "scattergl"})
    figure.update_layout(height=560, margin={"l": 0, "r": 0, "t": 10, "b": 0}, dragmode="lasso",
                         legend={"itemsizing": "constant"}, xaxis={"visible": False}, yaxis={"visible": False})
    return figure


def density_layer(x: np.ndarray, y: np.ndarray) -> go.Contour:
    """Where every image lies, as filled contours of counts per bin (white where there are none)."""
    counts, x_edges, y_edges = np.histogram2d(x, y, bins=DENSITY_BINS)
    return go.Contour(z=counts.T, x=(x_edges[:-1] + x_edges[1:]) / 2, y=(y_edges[:-1] + y_edges[1:]) / 2,
                      showscale=False, hoverinfo="skip", colorscale="Greys", opacity=0.35, ncontours=12,
                      line={"width": 0})


def selected_ids(event: object) -> list[str]:
    """The image ids of the points a box or lasso selected (first selection order, no repeats)."""
    points = getattr(getattr(event, "selection", None), "points", None) or []
    ids = [p["customdata"][0] if isinstance(p.get("customdata"), list) else p.get("customdata") for p in points]
    return list(dict.fromkeys(i for i in ids if i))


def render_map(current: Collection, key: str, *, colour: str | None = None,
               highlight: Set[str] | None = None) -> list[str]:
    """The map with a colour control (or a fixed ``colour``, "selection" with ``highlight``); returns
    the ids of the images the user selected on it."""
    drawn, everything = map_points(current, highlight)
    if colour is None:
        choice = st.segmented_control("Colour by", list(COLOURS), default="anomaly score", key=f"{key}-colour")
        colour = COLOURS[choice or "anomaly score"]
    if len(everything) > len(drawn):
        st.caption(f"{len(everything):,} images: the shading shows where all of them lie; the points are an even "
                   f"sample of {SCATTER_LIMIT:,}, and a selection picks among them.")
    event = st.plotly_chart(map_figure(drawn, colour, everything), key=key, on_select="rerun", selection_mode=("box", "lasso"),
                            width="stretch", config={"displaylogo": False})
    return selected_ids(event)
