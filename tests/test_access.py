"""Users and roles through the facade, on both catalog backends: who may call what, what a refused
call leaves behind (nothing), sign-in, the first admin and the signing key."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from streamlit_authenticator.utilities.hasher import Hasher

import core.collection
from core import (
    Actor,
    AuthenticationFailed,
    Busy,
    Collection,
    DuplicateThresholds,
    Forbidden,
    InvalidRequest,
    NotFound,
    Role,
    SearchFilter,
    Settings,
    SettingsError,
    Unavailable,
)
from core.embedding import Embedder
from core.synthetic import encode, photo
from core.users import INITIAL_PASSWORD_FILE

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
USERS = {"root": Role.ADMIN, "ana": Role.ANALYST, "vic": Role.VIEWER, "tmp": Role.VIEWER}


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """bcrypt's fewest rounds: the same format and checks, a hundred times faster than the default."""
    real = bcrypt.gensalt
    monkeypatch.setattr(bcrypt, "gensalt", lambda rounds=12, prefix=b"2b": real(4, prefix))


@pytest.fixture(params=["sqlite", "postgresql"])
def people(request: pytest.FixtureRequest, settings: Settings, embedder: Embedder) -> Iterator[Collection]:
    """A collection with three images and the users above, on each catalog backend."""
    if request.param == "postgresql":
        settings = replace(settings, database_url=request.getfixturevalue("postgres_url"), auth_secret="k" * 40)
    with Collection.open(settings, embedder=embedder) as opened:
        opened.ingest_uploads([(f"seed{i}.jpg", encode(photo(i))) for i in (1, 10, 20)], source="seed")
        for name, role in USERS.items():
            opened.add_user(name, role, PASSWORD)
        yield opened


def _image_id(collection: Collection) -> str:
    frame = collection.backends.catalog.ready_frame()
    return str(frame.loc[frame["file_name"] == "seed1.jpg", "id"].iloc[0])


def state(collection: Collection) -> dict[str, Any]:
    """Everything a write call could change, read beneath the facade."""
    catalog = collection.backends.catalog
    return {
        "counts": catalog.counts(),
        "version": catalog.version(),
        "vectors": collection.backends.vectors.count(),
        "blobs": collection.backends.blobs.count(""),
        "labels": {k: (v.label, v.labelled_by) for k, v in catalog.labels().items()},
        "decisions": catalog.decisions(),
        "users": catalog.users.all(),
        "files": sorted(p.name for p in collection.settings.data_dir.iterdir()),
    }


# every write call of the facade, with the least role that may make it
WRITE_CALLS: dict[str, tuple[Role, Callable[[Collection, Path], object]]] = {
    "ingest": (Role.ANALYST, lambda c, tmp: c.ingest([_one_file(tmp)], source="paths")),
    "ingest_uploads": (Role.ANALYST, lambda c, tmp: c.ingest_uploads([("new.jpg", encode(photo(2)))])),
    "label": (Role.ANALYST, lambda c, tmp: c.label(_image_id(c), "anomaly")),
    "label clear": (Role.ANALYST, lambda c, tmp: c.label(_image_id(c), None)),
    "repair": (Role.ADMIN, lambda c, tmp: c.repair()),
    "decide": (Role.ANALYST, lambda c, tmp: c.decide([_image_id(c)], "remove")),
    "decide_each": (Role.ANALYST, lambda c, tmp: c.decide_each({_image_id(c): "keep"})),
    "apply_keep_rule": (Role.ANALYST, lambda c, tmp: c.apply_keep_rule(c.preview_keep_rule("size", override=True))),
    "remove_images": (Role.ADMIN, lambda c, tmp: c.remove_images([_image_id(c)])),
    "restore_images": (Role.ADMIN, lambda c, tmp: c.restore_images([_image_id(c)])),
    "purge_images": (Role.ADMIN, lambda c, tmp: c.purge_images([_image_id(c)])),
    "add_user": (Role.ADMIN, lambda c, tmp: c.add_user("new", "viewer", PASSWORD)),
    "users": (Role.ADMIN, lambda c, tmp: c.users()),
    "set_password": (Role.ADMIN, lambda c, tmp: c.set_password("tmp", "another password")),
    "disable_user": (Role.ADMIN, lambda c, tmp: c.disable_user("tmp")),
    "remove_user": (Role.ADMIN, lambda c, tmp: c.remove_user("tmp")),
    "ensure_admin": (Role.ADMIN, lambda c, tmp: c.ensure_admin()),
    "login_credentials": (Role.ADMIN, lambda c, tmp: c.login_credentials()),
    "auth_secret": (Role.ADMIN, lambda c, tmp: c.auth_secret()),
}
ORDER = (Role.VIEWER, Role.ANALYST, Role.ADMIN)


def _one_file(tmp: Path) -> Path:
    path = tmp / "incoming" / "one.jpg"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(encode(photo(3)))
    return path


@pytest.mark.parametrize("user", ["vic", "ana", "root"])
@pytest.mark.parametrize("call", list(WRITE_CALLS))
def test_each_role_may_make_exactly_its_write_calls(people: Collection, tmp_path: Path, call: str, user: str) -> None:
    least, make = WRITE_CALLS[call]
    acting = people.as_user(user)
    allowed = ORDER.index(USERS[user]) >= ORDER.index(least)
    before = state(people)
    if allowed:
        make(acting, tmp_path)
    else:
        with pytest.raises(Forbidden) as refused:
            make(acting, tmp_path)
        assert (refused.value.user, refused.value.role) == (user, USERS[user].value)
        assert state(people) == before  # nothing half-done


def test_viewers_read_search_and_analyse(people: Collection) -> None:
    viewer = people.as_user("vic")
    image_id = _image_id(people)
    assert viewer.status().acting_as == {"name": "vic", "role": "viewer"}
    hits = viewer.search(image_id=image_id, k=5, filters=SearchFilter(sources=("seed",))).results
    assert len(hits) == 2 and image_id not in {h.image_id for h in hits}
    assert viewer.images([image_id])[0].file_name == "seed1.jpg"
    assert viewer.names(image_id)[0].source == "seed"
    assert viewer.thumbnail(image_id)[:2] == b"\xff\xd8"
    assert len(viewer.anomalies().rows) == 3


def test_uploads_and_labels_record_who_made_them(people: Collection) -> None:
    analyst = people.as_user("ana")
    report = analyst.ingest_uploads([("by-ana.jpg", encode(photo(5)))], source="team")
    new_id = report.outcomes[0].image_id
    analyst.label(new_id, "normal")
    assert people.images([new_id])[0].uploader == "ana"
    assert people.names(new_id)[0].uploader == "ana"
    assert people.backends.catalog.labels()[new_id].labelled_by == "ana"


def test_as_user_refuses_unknown_and_disabled_users(people: Collection) -> None:
    with pytest.raises(NotFound, match="nobody"):
        people.as_user("nobody")
    people.disable_user("tmp")
    with pytest.raises(Forbidden, match="disabled"):
        people.as_user("tmp")


def test_authenticate_gives_the_actor_and_one_answer_for_every_failure(people: Collection) -> None:
    assert people.authenticate("ana", PASSWORD) == Actor("ana", Role.ANALYST)
    people.disable_user("tmp")
    failures = []
    for name, password in (("ana", "wrong password"), ("nobody", PASSWORD), ("tmp", PASSWORD), ("Bad\x00", PASSWORD)):
        with pytest.raises(AuthenticationFailed) as failed:
            people.authenticate(name, password)
        failures.append(str(failed.value))
    assert len(set(failures)) == 1


def test_login_credentials_serve_streamlit_authenticator(people: Collection) -> None:
    people.disable_user("tmp")
    credentials = people.login_credentials()
    assert set(credentials["usernames"]) == {"root", "ana", "vic"}
    ana = credentials["usernames"]["ana"]
    assert ana["name"] == "ana" and ana["roles"] == ["analyst"]
    assert Hasher.is_hash(ana["password"]) and Hasher.check_pw(PASSWORD, ana["password"])
    assert not Hasher.check_pw("wrong password", ana["password"])


def test_user_calls_on_unknown_users_are_not_found(people: Collection) -> None:
    for call in (people.set_password, people.disable_user, people.remove_user):
        with pytest.raises(NotFound):
            call(*(["ghost", PASSWORD] if call == people.set_password else ["ghost"]))


# first run ----------------------------------------------------------------------------------------
def test_first_admin_is_created_once_with_a_private_password_file(
    collection: Collection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = collection.ensure_admin()
    assert password and len(password) >= 20
    path = collection.settings.data_dir / INITIAL_PASSWORD_FILE
    assert path.read_text().strip() == password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert collection.authenticate("admin", password) == Actor("admin", Role.ADMIN)
    assert collection.ensure_admin() is None
    assert [u.name for u in collection.users()] == ["admin"]
    assert password not in caplog.text


def test_a_second_process_racing_for_the_first_admin_creates_none(collection: Collection) -> None:
    other = Collection(collection.settings, collection.backends)
    assert collection.ensure_admin() is not None
    assert other.ensure_admin() is None


# the signing key ----------------------------------------------------------------------------------
def _env_example_value(name: str) -> str:
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"{name} is not in .env.example")


@pytest.mark.parametrize("value", ["change-me", "CHANGE-ME", _env_example_value("AUTH_SECRET")])
def test_placeholder_auth_secrets_are_refused(value: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="AUTH_SECRET"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "AUTH_SECRET": value})


def test_the_auth_secret_never_shows_in_settings(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "AUTH_SECRET": "s3cret-signing-key-0123456789"})
    assert settings.auth_secret == "s3cret-signing-key-0123456789"
    assert settings.public()["auth_secret"] == "***" and "s3cret" not in repr(settings)


def test_a_server_backend_needs_an_auth_secret(settings: Settings, embedder: Embedder, postgres_url: str) -> None:
    with Collection.open(replace(settings, database_url=postgres_url), embedder=embedder) as served, \
            pytest.raises(SettingsError, match="AUTH_SECRET is not set"):
        served.auth_secret()
    secret = "k" * 40
    with Collection.open(replace(settings, database_url=postgres_url, auth_secret=secret), embedder=embedder) as served:
        assert served.auth_secret() == secret
    assert not (settings.data_dir / "auth-secret").exists()


def test_the_embedded_default_generates_its_secret_once(collection: Collection) -> None:
    first = collection.auth_secret()
    path = collection.settings.data_dir / "auth-secret"
    assert len(first) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Collection(collection.settings, collection.backends).auth_secret() == first
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".auth-secret")] == []


# domain errors ------------------------------------------------------------------------------------
MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.search(image_id=MISSING),
        lambda c: c.label(MISSING, "anomaly"),
        lambda c: c.label(MISSING, None),
        lambda c: c.thumbnail(MISSING),
        lambda c: c.thumbnail_url(MISSING),
        lambda c: c.original("../catalog.sqlite3"),
        lambda c: c.names(MISSING),
        lambda c: c.decide([MISSING], "keep"),
        lambda c: c.undo_decisions("no-such-token"),
        lambda c: c.remove_images([MISSING]),
        lambda c: c.restore_images([MISSING]),
        lambda c: c.purge_images([MISSING]),
        lambda c: c.image_detail(MISSING),
    ],
)
def test_unknown_image_ids_are_not_found(people: Collection, call: Callable[[Collection], object]) -> None:
    with pytest.raises(NotFound):
        call(people)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.ingest_uploads([("a.jpg", encode(photo(7)))], source="batch\x1b[31m"), "source"),
        (lambda c: c.ingest_uploads([("a.jpg", encode(photo(7)))], source=""), "source"),
        (lambda c: c.label(_image_id(c), "weird"), "label"),
        (lambda c: c.search(text="x", k=0), "k"),
        (lambda c: c.search(image=b"not an image"), "image"),
        (lambda c: c.anomalies(method="zscore"), "method"),
        (lambda c: c.anomalies(contamination=250), "contamination"),
        (lambda c: c.search(text="x", filters=SearchFilter(sources=("a\nb",))), "sources"),
        (lambda c: c.duplicates(DuplicateThresholds(hamming=99)), "hamming"),
        (lambda c: c.duplicates(DuplicateThresholds(similarity=-5.0)), "similarity"),
        (lambda c: c.duplicate_examples("colour"), "signal"),
        (lambda c: c.add_user("Ana", "viewer", PASSWORD), "name"),
        (lambda c: c.add_user("ana\tx", "viewer", PASSWORD), "name"),
        (lambda c: c.add_user("x" * 65, "viewer", PASSWORD), "name"),
        (lambda c: c.add_user("ana", "viewer", PASSWORD), "name"),  # taken
        (lambda c: c.add_user("new", "owner", PASSWORD), "role"),
        (lambda c: c.add_user("new", "viewer", "short"), "password"),
        (lambda c: c.add_user("new", "viewer", "é" * 40), "password"),  # 80 bytes: past bcrypt's 72
        (lambda c: c.set_password("ana", "x"), "password"),
        (lambda c: c.remove_user("root"), "name"),  # the last enabled admin
        (lambda c: c.disable_user("root"), "name"),
        (lambda c: c.decide([_image_id(c)], "delete"), "decision"),
        (lambda c: c.preview_keep_rule("prettiest"), "rule"),
        (lambda c: c.preview_keep_rule("source"), "source"),
    ],
)
def test_bad_arguments_are_invalid_requests_naming_the_field_and_change_nothing(
    people: Collection, call: Callable[[Collection], object], field: str
) -> None:
    before = state(people)
    with pytest.raises(InvalidRequest) as refused:
        call(people)
    assert refused.value.field == field
    assert state(people) == before


def test_a_bad_upload_name_rejects_that_file_only_and_says_nothing_of_the_others(people: Collection) -> None:
    bad = ["a\u202ejpg.exe", "nul\x00.jpg", "two\nlines.jpg"]
    uploads = [(name, encode(photo(70 + i))) for i, name in enumerate(bad)]
    uploads += [(f"ok{i}.jpg", encode(photo(80 + i))) for i in range(4)]
    before = people.status().images
    report = people.ingest_uploads(uploads, source="names")
    assert [(o.file, o.status, o.reason_code) for o in report.outcomes[:3]] == [
        (name, "rejected", "invalid_name") for name in bad]
    assert [o.status for o in report.outcomes[3:]] == ["ingested"] * 4 and report.error is None
    assert people.status().images == before + 4 and people.status().consistent
    for outcome in report.rejected:
        reason = outcome.reason or ""
        assert reason.startswith("Invalid name") and "ok0.jpg" not in reason and "INSERT" not in reason


def test_a_shard_held_by_another_process_is_busy(settings: Settings, embedder: Embedder) -> None:
    path = settings.data_dir / "vectors"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from core.storage.vectors_edge import EdgeVectorStore
        store = EdgeVectorStore(Path({str(path)!r}), {embedder.dim})
        with store._session():
            print("holding", flush=True)
            time.sleep(60)
    """)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with Collection.open(replace(settings, lock_timeout_s=1), embedder=embedder) as waiting, \
                pytest.raises(Busy) as busy:
            waiting.status()
        assert str(holder.pid) in busy.value.holder and busy.value.retry_after_s >= 1
        assert busy.value.http_status == 409
    finally:
        holder.kill()
        holder.wait()


def test_an_unreachable_catalog_server_is_unavailable(settings: Settings, embedder: Embedder) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://postgres:pw-never-shown@127.0.0.1:{port}/none"
    with pytest.raises(Unavailable) as down:
        Collection.open(replace(settings, database_url=url), embedder=embedder)
    assert "pw-never-shown" not in str(down.value) and down.value.exit_code == 5


# views share what is expensive --------------------------------------------------------------------
@dataclass(frozen=True)
class _Info:
    name: str = "counted"


class _CountingEmbedder:
    loads = 0

    def __init__(self, _settings: Settings) -> None:
        type(self).loads += 1
        self.info = _Info()


def test_a_view_loads_the_model_and_the_snapshot_for_the_original(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core.collection, "Embedder", _CountingEmbedder)
    with Collection.open(settings) as original:
        view = original.acting_as(Actor("vic", Role.VIEWER))
        assert original.model_info() is None
        view.embedder  # noqa: B018 (loads the model)
        assert original.model_info() == _Info() and original.embedder is view.embedder
        assert _CountingEmbedder.loads == 1
        assert view.snapshot() is original.snapshot() and view.analysis is original.analysis
        with original.acting_as(Actor("ana", Role.ANALYST)) as request:  # a request's view, closed after it
            request.status()
        assert original.status().images == 0  # the original's stores are still open
