"""Upload: drop many images, name their source, and get one row per file: ingested (with the
nearest image stored before it and the verdict), already present, or rejected and why."""

from __future__ import annotations

import streamlit as st

from core import Action, FileOutcome
from shared import acting_collection, load_model, may
from widgets.grid import page_of

VERDICTS = {"exact": "exact duplicate of", "near": "near-duplicate of", "none": "nearest stored image"}
STATUS = {"ingested": ":material/check_circle: ingested", "already_present": ":material/replay: already present",
          "rejected": ":material/block: rejected", "failed": ":material/error: failed"}
ORDER = ("failed", "rejected", "ingested", "already_present")  # what needs a look first
PER_PAGE = 20

current = acting_collection("upload", "Upload images")
if not may(current, Action.UPLOAD):
    st.info(f"Your role ({current.actor.role.value}) can browse, search and export, not upload; ask an admin "
            "for the analyst role.")
    st.stop()
limit_mb = current.settings.max_upload_mb
files = st.file_uploader("Drop images here (or browse)", accept_multiple_files=True,
                         help="JPEG, PNG, WebP, GIF, BMP and TIFF are accepted; other files are reported.")
st.caption(f"Up to {limit_mb} MB per file (MAX_UPLOAD_MB). Files with the same bytes as a stored image are "
           "reported as already present, not stored twice.")
source = st.text_input("Source label", value="upload", help="Where these images come from; Search filters on it.")
if not files:
    st.info("Drop one or more images above, give them a source label, then press Ingest.")
if st.button("Ingest", type="primary", disabled=not files) and load_model(current):
    bar = st.progress(0.0, text="Ingesting…")
    st.session_state["upload_report"] = current.ingest_uploads(
        [(f.name, f.getvalue()) for f in files or []],
        source=source,
        progress=lambda done, total: bar.progress(done / max(total, 1), text=f"{done} of {total} files"),
    )
    bar.progress(1.0, text="Done")


def outcome_row(outcome: FileOutcome, thumbnails: dict[str, bytes | str]) -> None:
    """One file: its thumbnail, name and status, and for a new image the nearest stored one."""
    new, about, near, verdict = st.columns([1, 3, 1, 3], vertical_alignment="center")
    if outcome.image_id in thumbnails and outcome.status != "rejected":
        new.image(thumbnails[outcome.image_id], width=96)
    about.text(outcome.file)
    about.caption(STATUS.get(outcome.status, outcome.status) + (f": {outcome.reason}" if outcome.reason else ""))
    match = outcome.nearest
    if match is not None and match.image_id:
        if match.image_id in thumbnails:
            near.image(thumbnails[match.image_id], width=96)
        stored = current.images([match.image_id])
        verdict.text(f"{VERDICTS.get(match.verdict, match.verdict)} {stored[0].file_name if stored else match.image_id}")
        if match.similarity is not None:
            verdict.caption(f"similarity {match.similarity:.3f}, pHash distance {match.phash_distance} bits"
                            + (f", signals: {', '.join(match.signals)}" if match.signals else ""))


report = st.session_state.get("upload_report")
if report is not None:
    counts = st.columns(3)
    counts[0].metric("Ingested", report.ingested)
    counts[1].metric("Already present", report.already_present)
    counts[2].metric("Rejected", len(report.rejected))
    if report.error:
        st.error(f"Stopped: {report.error}. Nothing of the failed batch was kept; try again.")
    outcomes = sorted(report.outcomes, key=lambda o: ORDER.index(o.status) if o.status in ORDER else len(ORDER))
    shown = [outcomes[index] for index in page_of(len(outcomes), "upload-results", PER_PAGE)]
    thumbnails = current.thumbnail_sources([i for o in shown for i in (o.image_id, o.nearest and o.nearest.image_id) if i])
    for outcome in shown:
        with st.container(border=True):
            outcome_row(outcome, thumbnails)
