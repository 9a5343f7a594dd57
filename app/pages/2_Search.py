"""Search: placeholder until the dashboard issue; the analysis lives in core's facade."""

from __future__ import annotations

import streamlit as st

from shared import model_banner, open_collection

st.set_page_config(page_title="Search", layout="wide")
st.title("Search")
model_banner(open_collection("search"))
st.info("This page arrives with the dashboard issue; the command line has it already (visual-anomaly --help).")
