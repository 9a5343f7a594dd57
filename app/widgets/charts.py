"""Histograms with the threshold the user moves drawn on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st

BINS = 50


def threshold_histogram(edges: Sequence[float], counts: Sequence[int], threshold: float, *, x_title: str,
                        y_title: str, key: str) -> None:
    """Bars over ``edges`` (len(counts) + 1) with a vertical line at ``threshold``."""
    edges = np.asarray(edges, dtype=float)
    filled = np.flatnonzero(np.asarray(counts))
    shown = (edges[filled[0]] if len(filled) else edges[0], edges[filled[-1] + 1] if len(filled) else edges[-1])
    # The threshold line and its label go in with the layout: add_vline() costs a tenth of a
    # slider move's server time.
    figure = go.Figure(
        go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=list(counts), width=np.diff(edges), marker_color="#4c78a8",
               hovertemplate="%{x:.3f}: %{y}<extra></extra>"),
        layout={
            "height": 220, "margin": {"l": 0, "r": 0, "t": 24, "b": 0}, "bargap": 0,
            "xaxis": {"title": x_title, "range": [min(shown[0], threshold), max(shown[1], threshold)]},
            "yaxis": {"title": y_title},
            "shapes": [{"type": "line", "x0": threshold, "x1": threshold, "y0": 0, "y1": 1, "yref": "paper",
                        "line": {"color": "#d62728", "width": 2}}],
            "annotations": [{"x": threshold, "y": 1, "yref": "paper", "text": f"{threshold:.3f}", "showarrow": False,
                             "xanchor": "left", "yanchor": "bottom"}],
        },
    )
    st.plotly_chart(figure, key=key, width="stretch", config={"displaylogo": False})


def values_histogram(values: Sequence[float], threshold: float, *, x_title: str, key: str) -> None:
    """A histogram of ``values`` (binned here, so the browser gets BINS bars, not every value)."""
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=BINS)
    threshold_histogram(edges, counts, threshold, x_title=x_title, y_title="images", key=key)
