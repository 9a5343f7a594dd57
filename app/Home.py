"""Home: what the collection holds and what it runs on."""

from __future__ import annotations

import streamlit as st

from shared import model_banner, open_collection

st.set_page_config(page_title="Visual anomaly dashboard", layout="wide")
st.title("Visual anomaly dashboard")
current = open_collection("home")
model_banner(current)
status = current.status()
cols = st.columns(4)
cols[0].metric("Images", status.images)
cols[1].metric("Vectors", status.vectors)
cols[2].metric("Originals", status.blobs)
cols[3].metric("Pending", status.pending)
if not status.cache_healthy:
    st.warning(f"The cache ({status.backends['cache']}) cannot be reached: everything works, but slower.")
if not status.consistent:
    st.warning("The stores disagree or an ingest was interrupted: run the same ingest again, or `visual-anomaly repair`.")
st.subheader("Backends")
st.table({"store": list(status.backends), "where": list(status.backends.values())})
