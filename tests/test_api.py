"""The HTTP API over a real collection (embedded default and the server stack), driven in-process
with FastAPI's TestClient: tokens, roles per write endpoint, the bad-input set, ETags, jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from fixtures_servers import free_port
from qdrant_client import QdrantClient

from api.app import create_app
from core.collection import Collection
from core.embedding import Embedder
from core.settings import Settings
from core.storage.cache_memory import MemoryCache
from core.synthetic import encode, photo

pytest_plugins = ("fixtures_servers",)

PASSWORD = "correct horse battery"
REPO = Path(__file__).resolve().parents[1]
ROLES = ("viewer", "analyst", "admin")


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return replace(settings, api_job_files=4, api_max_files=10, max_upload_mb=1)


def with_users(opened: Collection) -> Collection:
    for role in ROLES:
        opened.add_user(role, role, PASSWORD)
    return opened


@pytest.fixture
def embedded_collection(api_settings: Settings, embedder: Embedder) -> Iterator[Collection]:
    with Collection.open(api_settings, embedder=embedder) as opened:
        yield with_users(opened)


@pytest.fixture
def servers_collection(api_settings: Settings, embedder: Embedder, request: pytest.FixtureRequest) -> Iterator[Collection]:
    """PostgreSQL, Redis, S3 on moto and qdrant-client's local mode (standing in for its server)."""
    server = replace(api_settings, database_url=request.getfixturevalue("postgres_url"),
                     redis_url=request.getfixturevalue("redis_url"), auth_secret=uuid.uuid4().hex,
                     qdrant_collection=f"api_{uuid.uuid4().hex[:8]}", **request.getfixturevalue("s3_settings"))
    with request.getfixturevalue("open_on_servers")(server, embedder, QdrantClient(location=":memory:")) as opened:
        yield with_users(opened)


@pytest.fixture(params=["embedded", "servers"])
def api_collection(request: pytest.FixtureRequest) -> Collection:
    return request.getfixturevalue(f"{request.param}_collection")


@pytest.fixture
def client(api_collection: Collection) -> TestClient:
    return TestClient(create_app(api_collection))


def token(client: TestClient, user: str) -> dict[str, str]:
    answer = client.post("/v1/token", data={"username": user, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def jpeg(seed: int) -> bytes:
    return encode(photo(seed))


def upload(client: TestClient, user: str, files: list[tuple[str, bytes]], **data: str):
    return client.post("/v1/images", headers=token(client, user), data=data,
                       files=[("files", (name, body, "application/octet-stream")) for name, body in files])


def stored(collection: Collection) -> int:
    return collection.status().images


def assert_problem(answer, status: int, field: str | None = None) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["status"] == status and body["detail"]
    if field is not None:
        assert body["field"] == field
    return body


def test_token_names_the_user_and_role(client: TestClient) -> None:
    me = client.get("/v1/me", headers=token(client, "analyst"))
    assert me.json() == {"name": "analyst", "role": "analyst"}
    assert_problem(client.post("/v1/token", data={"username": "analyst", "password": "wrong one!"}), 401)


def test_missing_forged_and_expired_tokens_are_refused(client: TestClient, api_collection: Collection) -> None:
    assert_problem(client.get("/v1/me"), 401, "Authorization")
    forged = jwt.encode({"sub": "admin", "exp": time.time() + 60}, "not-the-secret-" * 4, algorithm="HS256")
    assert_problem(client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"}), 401, "Authorization")
    secret = api_collection.auth_secret()
    expired = jwt.encode({"sub": "admin", "exp": time.time() - 5}, secret, algorithm="HS256")
    body = assert_problem(client.get("/v1/me", headers={"Authorization": f"Bearer {expired}"}), 401)
    assert "expired" in body["detail"]


@pytest.mark.parametrize("role", ROLES)
def test_upload_per_role(client: TestClient, api_collection: Collection, role: str) -> None:
    answer = upload(client, role, [("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))], source="batch-1")
    if role == "viewer":
        assert_problem(answer, 403)
        assert stored(api_collection) == 0
    else:
        assert answer.status_code == 200, answer.text
        assert [f["status"] for f in answer.json()["files"]] == ["ingested", "ingested"]
        assert stored(api_collection) == 2


@pytest.mark.parametrize("role", ROLES)
def test_label_per_role(client: TestClient, api_collection: Collection, role: str) -> None:
    image_id = upload(client, "admin", [("a.jpg", jpeg(1))]).json()["files"][0]["image_id"]
    answer = client.put(f"/v1/images/{image_id}/label", headers=token(client, role), json={"label": "anomaly"})
    if role == "viewer":
        assert_problem(answer, 403)
        assert api_collection.anomalies().rows[0].label is None
    else:
        assert answer.status_code == 200, answer.text
        assert api_collection.anomalies().rows[0].label == "anomaly"


def test_bad_files_get_per_file_reasons_and_good_ones_are_stored(client: TestClient, api_collection: Collection) -> None:
    big = b"\xff\xd8" + b"0" * (1024 * 1024 + 10)
    answer = upload(client, "analyst", [("ok.jpg", jpeg(3)), ("notes.jpg", b"just some text"), ("empty.png", b""),
                                        ("big.jpg", big)])
    assert answer.status_code == 200, answer.text
    outcomes = {f["file"]: f for f in answer.json()["files"]}
    assert outcomes["ok.jpg"]["status"] == "ingested"
    for name in ("notes.jpg", "empty.png", "big.jpg"):
        assert outcomes[name]["status"] == "rejected" and outcomes[name]["reason"], outcomes[name]
    assert stored(api_collection) == 1


def test_only_bad_files_is_a_422_listing_each(client: TestClient, api_collection: Collection) -> None:
    body = assert_problem(upload(client, "analyst", [("notes.jpg", b"text"), ("empty.png", b"")]), 422, "files")
    assert {f["file"] for f in body["files"]} == {"notes.jpg", "empty.png"}
    assert stored(api_collection) == 0


def test_too_many_files_stores_nothing(client: TestClient, api_collection: Collection) -> None:
    answer = upload(client, "analyst", [(f"{i}.jpg", jpeg(1)) for i in range(1000)])
    assert_problem(answer, 413, "files")
    assert stored(api_collection) == 0


def test_non_utf8_file_name_is_refused_by_field(client: TestClient, api_collection: Collection) -> None:
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"".encode()
            + b"bad\xff\xfe\x00.jpg" + b"\"\r\nContent-Type: image/jpeg\r\n\r\n" + jpeg(4)
            + f"\r\n--{boundary}--\r\n".encode())
    headers = token(client, "analyst") | {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    answer = client.post("/v1/images", headers=headers, content=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert stored(api_collection) == 0


def test_large_batch_runs_as_a_job_that_workers_share_through_redis(
    client: TestClient, api_collection: Collection, embedder: Embedder
) -> None:
    answer = upload(client, "analyst", [(f"{i}.jpg", jpeg(i)) for i in range(5)])
    assert answer.status_code == 202, answer.text
    location = answer.headers["Location"]
    deadline = time.monotonic() + 120
    while (job := client.get(location, headers=token(client, "analyst")).json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["state"] == "finished" and job["result"]["ingested"] == 5
    assert client.get(location, headers=token(client, "viewer")).status_code == 404  # not theirs
    # Another worker over the same stores, with its own process memory: with Redis it answers for the
    # job; without, it says why it cannot.
    shares_cache = api_collection.settings.redis_url is not None
    backends = api_collection.backends if shares_cache else replace(api_collection.backends, cache=MemoryCache())
    other = TestClient(create_app(Collection(api_collection.settings, backends, embedder)))
    answer = other.get(location, headers=token(other, "analyst"))
    if shares_cache:
        assert answer.json() == job
    else:
        assert "REDIS_URL" in assert_problem(answer, 404, "job")["detail"]


def test_search_by_id_text_and_bad_arguments(client: TestClient) -> None:
    ids = [f["image_id"] for f in upload(client, "analyst", [(f"{i}.jpg", jpeg(i)) for i in range(3)]).json()["files"]]
    viewer = token(client, "viewer")
    hits = client.post("/v1/search", headers=viewer, data={"image_id": ids[0], "k": "2"}).json()["results"]
    assert len(hits) == 2 and ids[0] not in {h["image_id"] for h in hits}
    assert client.post("/v1/search", headers=viewer, data={"text": "a red car", "k": "3"}).status_code == 200
    assert_problem(client.post("/v1/search", headers=viewer, data={"image_id": ids[0], "k": "-1"}), 422, "k")
    assert_problem(client.post("/v1/search", headers=viewer, data={"text": "x" * 1_000_000}), 422, "text")
    assert_problem(client.post("/v1/search", headers=viewer, data={"image_id": "nope"}), 404, "image")
    assert_problem(client.post("/v1/search", headers=viewer, files={"image": ("t.jpg", b"text", "image/jpeg")}),
                   422, "image")


def test_unknown_image_is_404(client: TestClient) -> None:
    viewer = token(client, "viewer")
    for path in ("/v1/images/nope", "/v1/images/nope/thumbnail", "/v1/images/nope/original"):
        assert_problem(client.get(path, headers=viewer), 404, "image")


def image_bytes(client: TestClient, path: str, headers: dict[str, str], on_s3: bool) -> bytes:
    """The bytes behind ``path``: served by the API, or on S3 a redirect to a presigned URL that the
    client fetches from the store itself."""
    answer = client.get(path, headers=headers, follow_redirects=False)
    if not on_s3:
        assert answer.status_code == 200, answer.text
        return answer.content
    assert answer.status_code == 307 and "X-Amz-Signature=" in answer.headers["Location"], answer.text
    return urllib.request.urlopen(answer.headers["Location"], timeout=5).read()


def test_image_record_and_bytes(client: TestClient, api_collection: Collection) -> None:
    original = jpeg(7)
    image_id = upload(client, "analyst", [("seven.jpg", original)]).json()["files"][0]["image_id"]
    viewer = token(client, "viewer")
    record = client.get(f"/v1/images/{image_id}", headers=viewer).json()
    assert record["image_id"] == image_id and record["names"][0]["file_name"] == "seven.jpg"
    on_s3 = api_collection.settings.s3_endpoint is not None
    assert image_bytes(client, f"/v1/images/{image_id}/original", viewer, on_s3) == original
    assert image_bytes(client, f"/v1/images/{image_id}/thumbnail", viewer, on_s3)[:2] == b"\xff\xd8"


def test_duplicates_etag_csv_and_paging(client: TestClient) -> None:
    image = jpeg(5)
    upload(client, "analyst", [("a.jpg", image), ("b.png", encode(photo(5), "PNG")), ("c.jpg", jpeg(9))])
    viewer = token(client, "viewer")
    first = client.get("/v1/duplicates", headers=viewer, params={"limit": 1})
    assert first.status_code == 200 and len(first.json()["rows"]) == 1 and first.json()["total"] == 2
    etag = first.headers["ETag"]
    assert client.get("/v1/duplicates", headers=viewer | {"If-None-Match": etag}, params={"limit": 1}).status_code == 304
    changed = client.get("/v1/duplicates", headers=viewer | {"If-None-Match": etag}, params={"limit": 1, "hamming": 0})
    assert changed.status_code == 200
    as_csv = client.get("/v1/duplicates", headers=viewer | {"Accept": "text/csv"})
    lines = as_csv.text.strip().splitlines()
    assert as_csv.headers["content-type"].startswith("text/csv") and lines[0].startswith("cluster_id,image_id")
    assert len(lines) == 3
    anomalies = client.get("/v1/anomalies", headers=viewer, params={"top": 1})
    assert anomalies.json()["selected"] == 1 and len(anomalies.json()["rows"]) == 3
    assert_problem(client.get("/v1/anomalies", headers=viewer, params={"method": "magic"}), 422, "method")


def test_embed_text_and_image(client: TestClient, embedder: Embedder) -> None:
    viewer = token(client, "viewer")
    by_text = client.post("/v1/embed", headers=viewer, data={"text": "a cat"}).json()
    by_image = client.post("/v1/embed", headers=viewer, files={"image": ("a.jpg", jpeg(1), "image/jpeg")}).json()
    assert by_text["dim"] == by_image["dim"] == embedder.dim
    assert_problem(client.post("/v1/embed", headers=viewer), 422, "text")


def test_rate_limit_answers_429_with_retry_after(api_collection: Collection) -> None:
    limited = TestClient(create_app(api_collection.acting_as(api_collection.actor)))
    limited.app.state.api.limiter._per_minute = 2
    headers = token(limited, "viewer")
    assert [limited.get("/v1/me", headers=headers).status_code for _ in range(2)] == [200, 200]
    answer = limited.get("/v1/me", headers=headers)
    assert_problem(answer, 429)
    assert int(answer.headers["Retry-After"]) >= 1


def test_a_fresh_serve_api_creates_the_first_admin_who_can_sign_in(tmp_path: Path) -> None:
    port = free_port()
    env = os.environ | {"DATA_DIR": str(tmp_path / "data"), "MODEL_PRETRAINED": "none", "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "core.cli", "serve-api", "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = server.stdout.readline() if server.stdout else ""
        assert first.startswith("Created user admin with password: "), first
        password = first.removeprefix("Created user admin with password: ").strip()
        deadline = time.monotonic() + 300  # a loaded shared CPU has taken minutes to import torch
        while True:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/v1/token", data={"username": "admin", "password": password})
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "serve-api did not come up"
                time.sleep(0.3)
        assert answer.status_code == 200 and answer.json()["access_token"], answer.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/readyz").status_code == 200
    client.get("/v1/me", headers=token(client, "viewer"))
    metrics = client.get("/metrics").text
    assert 'endpoint="/v1/me"' in metrics and "http_request_duration_seconds" in metrics


def test_list_images_pages_and_filters(client: TestClient) -> None:
    upload(client, "analyst", [("cat.jpg", jpeg(1)), ("dog.jpg", jpeg(2))], source="pets")
    upload(client, "analyst", [("car.jpg", jpeg(3))], source="cars")
    viewer = token(client, "viewer")
    first = client.get("/v1/images", headers=viewer, params={"limit": 2, "sort": "name"}).json()
    assert [i["file_name"] for i in first["items"]] == ["car.jpg", "cat.jpg"]
    assert (first["total"], first["next_offset"]) == (3, 2)
    pets = client.get("/v1/images", headers=viewer, params={"source": "pets"}).json()
    assert {i["file_name"] for i in pets["items"]} == {"cat.jpg", "dog.jpg"}
    assert_problem(client.get("/v1/images", headers=viewer, params={"limit": 0}), 422, "limit")
    assert_problem(client.get("/v1/images", headers=viewer, params={"sort": "colour"}), 422, "sort")


def pair_of_duplicates(client: TestClient) -> list[str]:
    files = upload(client, "admin", [("a.jpg", jpeg(5)), ("b.png", encode(photo(5), "PNG"))]).json()["files"]
    return [f["image_id"] for f in files]


@pytest.mark.parametrize("role", ROLES)
def test_decision_per_role(client: TestClient, api_collection: Collection, role: str) -> None:
    image_id = pair_of_duplicates(client)[0]
    answer = client.put(f"/v1/images/{image_id}/decision", headers=token(client, role), json={"decision": "remove"})
    if role == "viewer":
        assert_problem(answer, 403)
        assert image_id not in api_collection.decisions()
    else:
        assert answer.status_code == 200 and answer.json()["images"] == 1, answer.text
        assert api_collection.decisions()[image_id].decision == "remove"


@pytest.mark.parametrize("role", ROLES)
def test_keep_rule_preview_and_apply_per_role(client: TestClient, api_collection: Collection, role: str) -> None:
    pair_of_duplicates(client)
    headers = token(client, role)
    preview = client.post("/v1/duplicates/keep-rule", headers=headers, json={"rule": "resolution"})
    assert preview.status_code == 200 and len(preview.json()["changes"]) == 2, preview.text
    assert api_collection.decisions() == {}  # a preview writes nothing
    applied = client.post("/v1/duplicates/keep-rule", headers=headers, json={"rule": "resolution", "apply": True})
    if role == "viewer":
        assert_problem(applied, 403)
        assert api_collection.decisions() == {}
    else:
        assert applied.json()["applied"]["images"] == 2
        assert sorted(d.decision for d in api_collection.decisions().values()) == ["keep", "remove"]
    assert_problem(client.post("/v1/duplicates/keep-rule", headers=headers, json={"rule": "prettiest"}), 422, "rule")


@pytest.mark.parametrize("role", ROLES)
def test_delete_per_role(client: TestClient, api_collection: Collection, role: str) -> None:
    image_id = pair_of_duplicates(client)[0]
    headers = token(client, role)
    removed = client.delete(f"/v1/images/{image_id}", headers=headers)
    purged = client.delete(f"/v1/images/{image_id}", headers=headers, params={"purge": "true"})
    if role != "admin":  # soft delete and purge are an admin's
        assert_problem(removed, 403)
        assert_problem(purged, 403)
        assert stored(api_collection) == 2 and api_collection.removed_images() == []
        return
    assert removed.status_code == 200 and purged.status_code == 200, (removed.text, purged.text)
    assert stored(api_collection) == 1 and api_collection.removed_images() == []


# presigned uploads (S3) -------------------------------------------------------------------------
def open_upload(client: TestClient, user: str, file_name: str = "put.jpg", content_type: str = "image/jpeg",
                size: int = 1000):
    return client.post("/v1/uploads", headers=token(client, user),
                       json={"file_name": file_name, "content_type": content_type, "size": size})


def put_and_ingest(client: TestClient, user: str, name: str, data: bytes, declared: int | None = None, **body: str):
    """Open a slot for ``data`` (of the ``declared`` size), PUT it to S3 over HTTP (not through the API),
    then ingest it."""
    slot = open_upload(client, user, name, size=declared or len(data))
    assert slot.status_code == 200, slot.text
    put = httpx.put(slot.json()["url"], content=data, headers={"Content-Type": "image/jpeg"}, timeout=10)
    assert put.status_code == 200, put.text
    return slot.json()["key"], client.post(f"/v1/uploads/{slot.json()['key']}/ingest", headers=token(client, user),
                                          json=body)


def test_presigned_upload_then_ingest_makes_the_image_searchable(servers_collection: Collection) -> None:
    client = TestClient(create_app(servers_collection))
    data = jpeg(11)
    key, ingested = put_and_ingest(client, "analyst", "eleven.jpg", data, source="pipeline")
    assert ingested.status_code == 200, ingested.text
    (outcome,) = ingested.json()["files"]
    assert (outcome["file"], outcome["status"]) == ("eleven.jpg", "ingested")
    viewer = token(client, "viewer")
    hits = client.post("/v1/search", headers=viewer, files={"image": ("q.jpg", data, "image/jpeg")}).json()["results"]
    assert hits[0]["image_id"] == outcome["image_id"]
    assert image_bytes(client, f"/v1/images/{outcome['image_id']}/original", viewer, on_s3=True) == data
    assert servers_collection.names(outcome["image_id"])[0].source == "pipeline"
    # the uploaded object is gone once ingested: the key cannot be ingested twice
    assert_problem(client.post(f"/v1/uploads/{key}/ingest", headers=token(client, "analyst"), json={}), 404, "upload")


def test_presigned_upload_refuses_bad_declarations(servers_collection: Collection) -> None:
    client = TestClient(create_app(servers_collection))
    assert_problem(open_upload(client, "viewer"), 403)
    assert_problem(open_upload(client, "analyst", content_type="text/plain"), 422, "content_type")
    assert_problem(open_upload(client, "analyst", size=0), 422, "size")
    assert_problem(open_upload(client, "analyst", size=1024 * 1024 + 1), 422, "size")
    assert_problem(open_upload(client, "analyst", file_name="bad\x00name.jpg"), 422, "file_name")
    assert_problem(open_upload(client, "analyst", file_name=" "), 422, "file_name")


def test_presigned_upload_checks_what_was_put_and_stores_nothing_bad(servers_collection: Collection) -> None:
    client = TestClient(create_app(servers_collection))
    for name, data in (("notes.jpg", b"just some text"), ("big.jpg", b"\xff\xd8\xff" + b"0" * (1024 * 1024 + 10)),
                       ("empty.jpg", b"")):
        key, answer = put_and_ingest(client, "analyst", name, data, declared=1000)  # nothing checks a PUT's size
        body = assert_problem(answer, 422, "files")
        assert body["files"][0]["status"] == "rejected" and body["files"][0]["reason"], body
        again = client.post(f"/v1/uploads/{key}/ingest", headers=token(client, "analyst"), json={})
        assert_problem(again, 404, "upload")  # a rejected upload is removed too
    not_put = open_upload(client, "analyst").json()["key"]
    assert_problem(client.post(f"/v1/uploads/{not_put}/ingest", headers=token(client, "analyst"), json={}), 422, "key")
    assert_problem(client.post("/v1/uploads/not-a-key/ingest", headers=token(client, "analyst"), json={}), 404, "upload")
    servers_collection.add_user("other", "analyst", PASSWORD)
    key = open_upload(client, "analyst").json()["key"]
    assert_problem(client.post(f"/v1/uploads/{key}/ingest", headers=token(client, "other"), json={}), 404, "upload")
    assert stored(servers_collection) == 0


def test_presigned_upload_without_s3_says_it_needs_s3(embedded_collection: Collection) -> None:
    client = TestClient(create_app(embedded_collection))
    refused = assert_problem(open_upload(client, "analyst"), 409)
    assert "S3" in refused["detail"] and refused["title"] == "Not configured"
    answer = client.post(f"/v1/uploads/{uuid.uuid4().hex}/ingest", headers=token(client, "analyst"), json={})
    assert "POST /v1/images" in assert_problem(answer, 409)["detail"]
