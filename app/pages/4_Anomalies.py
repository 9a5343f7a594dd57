"""Anomalies: placeholder until the dashboard issue; the analysis lives in core's facade."""

from __future__ import annotations

import streamlit as st

from shared import model_banner, open_collection

st.set_page_config(page_title="Anomalies", layout="wide")
st.title("Anomalies")
model_banner(open_collection("anomalies"))
st.info("This page arrives with the dashboard issue; the command line has it already (visual-anomaly --help).")
