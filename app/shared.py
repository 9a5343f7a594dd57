"""What every page shares: the collection (built once per process), the one call that gives a page
the collection acting for whoever uses it, the model banner, empty states and CSV downloads."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st
import streamlit_authenticator as stauth

from core import (
    Action,
    Collection,
    DomainError,
    ModelUnavailable,
    Settings,
    SettingsError,
    csv_chunks,
    record_page_view,
    setup_observability,
)
from widgets.detail import show_image_detail

IMAGE_QUERY_PARAM = "image"  # ?image=ID opens that image's detail dialog on any page
SIGNED_IN_KEY = "username"  # where streamlit-authenticator keeps the signed-in user's name
COOKIE_NAME = "visual_anomaly_login"
COOKIE_DAYS = 7.0


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
    opened.warm_up_in_background()  # the analysis the first pages show, loaded while the first visitor signs in
    return opened


def acting_collection(page: str, title: str) -> Collection:
    """Every page's first call: sets the page up, counts the view, opens the collection (or says on
    the page why it cannot, and stops), shows who acts and the model banner, and opens the image a
    link names (``?image=ID``). Returns the collection acting for the signed-in user; signing in is
    this function's business alone, so the pages never change when the login does."""
    st.set_page_config(page_title=title, layout="wide")
    st.title(title)
    record_page_view(page)
    try:
        shared = collection()
    except (SettingsError, DomainError) as exc:
        st.error(f"The collection cannot be opened: {exc}")
        st.stop()
        raise
    who = st.sidebar.container()  # above the log-out button that signing in adds
    try:
        current = shared.as_user(sign_in(shared))
    except DomainError as exc:  # the account was removed or disabled since it signed in
        st.error(f"{exc}. Sign in again.")
        st.stop()
        raise
    who.markdown(f"Signed in as **{current.actor.name}** ({current.actor.role.value})")
    model_banner(current)
    linked = st.query_params.get(IMAGE_QUERY_PARAM)
    if linked:
        del st.query_params[IMAGE_QUERY_PARAM]
        show_image_detail(current, linked)
    return current


def sign_in(shared: Collection) -> str:
    """The signed-in catalog user's name; until someone signs in, the login form and a stop.
    streamlit-authenticator checks the password against the catalog's bcrypt hashes and keeps the
    session in a cookie signed with core's auth secret; the sidebar gets the log-out button."""
    authenticator = stauth.Authenticate(shared.login_credentials(), COOKIE_NAME, shared.auth_secret(),
                                        COOKIE_DAYS, auto_hash=False)
    if not st.session_state.get("authentication_status"):
        authenticator.login(location="main", fields={"Form name": "Sign in", "Login": "Sign in"})
    status = st.session_state.get("authentication_status")
    if status is False:
        st.error("Wrong user name or password.")
    if not status:
        st.caption("First run: the admin's password was printed on the server's terminal and written to "
                   "DATA_DIR/initial-admin-password.")
        st.stop()
    authenticator.logout("Log out", location="sidebar")
    return str(st.session_state[SIGNED_IN_KEY])


def may(current: Collection, action: Action) -> bool:
    """Whether the acting user's role allows ``action``: pages hide the controls it does not (core
    refuses the call anyway)."""
    return current.actor.may(action)


def model_banner(current: Collection) -> None:
    """Say on every page which weights the model runs: random weights give poor results."""
    model = current.model_config()
    text = f"Model **{model['name']}**, weights: **{model['weights']}**"
    if model.get("random_weights"):
        st.warning(text + ". Random weights: search and analysis quality is poor; set MODEL_PRETRAINED "
                   "or MODEL_CHECKPOINT.")
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


def empty_collection(current: Collection) -> bool:
    """Show what to do on an empty collection; True when it is empty (the page has nothing else)."""
    if current.image_count():
        return False
    st.info("The collection is empty. Add images on the **Upload** page (in the sidebar: drag and drop), or "
            "from a shell: `visual-anomaly ingest ./photos --source batch-1`.")
    return True


def image_link(image_id: str) -> str:
    """A link that opens the image's detail in the app (absolute when the browser's URL is known)."""
    base = (st.context.url or "").split("?", 1)[0].rstrip("/")
    return f"{base}/?{IMAGE_QUERY_PARAM}={image_id}"


def csv_bytes(rows: Sequence[dict]) -> bytes:
    """``rows`` as CSV through core's one writer (cells a spreadsheet would run as formulas made inert)."""
    return "".join(csv_chunks(rows, list(rows[0]) if rows else [])).encode()


def csv_download(label: str, rows: Sequence[dict], file_name: str, key: str) -> None:
    """A download button for ``rows`` as CSV (one row per dict, columns in the first dict's order)."""
    st.download_button(f"{label} ({len(rows)} rows)", csv_bytes(rows), file_name=file_name, mime="text/csv",
                       key=key, disabled=not rows)
