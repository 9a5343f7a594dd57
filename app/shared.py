"""What every page shares: the collection (built once per process) and the model banner."""

from __future__ import annotations

import streamlit as st

from core import (
    Collection,
    DomainError,
    ModelUnavailable,
    Settings,
    SettingsError,
    record_page_view,
    setup_observability,
)


@st.cache_resource(show_spinner="Opening the collection…")
def collection() -> Collection:
    """One collection (stores and model) per server process, shared by every session; the logs and
    the metrics server start with it. First run: the admin's password is printed once on the
    server's terminal (never logged), and a server deployment without AUTH_SECRET stops here."""
    settings = Settings.from_env()
    setup_observability(settings)
    opened = Collection.open(settings)
    try:
        opened.auth_secret()
        password = opened.ensure_admin()
    except BaseException:
        opened.close()
        raise
    if password:
        print(f"First run: created user admin with password {password} (also in DATA_DIR/initial-admin-password).")
    return opened


def open_collection(page: str) -> Collection:
    """The collection, or a clear error on the page (and a stop) when it cannot be opened. Counts the
    page view."""
    record_page_view(page)
    try:
        return collection()
    except (SettingsError, DomainError) as exc:
        st.error(f"The collection cannot be opened: {exc}")
        st.stop()
        raise


def model_banner(current: Collection) -> None:
    """Say on every page which weights the model runs: random weights give poor results."""
    model = current.model_config()
    text = f"Model **{model['name']}**, weights: **{model['weights']}**"
    if model.get("random_weights"):
        st.warning(text + ". Random weights: search and analysis quality is poor; set MODEL_PRETRAINED or MODEL_CHECKPOINT.")
    else:
        st.caption(text)


def load_model(current: Collection) -> bool:
    """Load the model (once per process); show the fix on screen if its weights are unavailable."""
    try:
        with st.spinner("Loading the model…"):
            current.embedder  # noqa: B018 (loads and caches the model)
    except ModelUnavailable as exc:
        st.error(str(exc))
        return False
    return True
