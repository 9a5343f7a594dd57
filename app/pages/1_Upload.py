"""Upload: drop images, get one line per file saying what happened to it."""

from __future__ import annotations

import streamlit as st

from shared import load_model, model_banner, open_collection

st.set_page_config(page_title="Upload", layout="wide")
st.title("Upload images")
current = open_collection("upload")
model_banner(current)
files = st.file_uploader("Images", accept_multiple_files=True, type=None)
source = st.text_input("Source label", value="upload")
if st.button("Ingest", disabled=not files) and load_model(current):
    bar = st.progress(0.0)
    report = current.ingest_uploads(
        [(f.name, f.getvalue()) for f in files],
        source=source,
        progress=lambda done, total: bar.progress(done / max(total, 1)),
    )
    st.success(f"{report.ingested} ingested, {report.already_present} already present, {len(report.rejected)} rejected.")
    if report.error:
        st.error(f"Stopped: {report.error}. Nothing of the failed batch was kept; try again.")
    st.dataframe([o.to_json() for o in report.outcomes], use_container_width=True)
