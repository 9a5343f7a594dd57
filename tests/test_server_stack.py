"""The production stack end to end, on real servers: PostgreSQL (the local one), S3 (moto's server),
Redis (the local one, or a private one a test stops) and qdrant-client in local mode standing in
for a Qdrant server, all behind the facade, chosen by settings as ``DATABASE_URL=... make run`` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from fixtures_servers import SECRETS, unreachable_settings
from PIL import Image
from qdrant_client import QdrantClient

from core.backends import open_backends
from core.cli import main as cli_main
from core.collection import Collection
from core.embedding import Embedder
from core.errors import Unavailable
from core.health import check_servers, unreachable_message
from core.settings import Settings
from core.storage.blobs import original_key, thumbnail_key
from core.synthetic import encode

if TYPE_CHECKING:
    from fixtures_servers import RedisProcess

OpenOnServers = Callable[[Settings, Embedder, QdrantClient], Collection]

pytest_plugins = ("fixtures_servers",)
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(local Qdrant|Local mode|insecure connection|obtain server version).*:UserWarning"
)


@pytest.fixture
def server_settings(tmp_path: Path, postgres_url: str, s3_settings: dict[str, str], redis_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=postgres_url,
        redis_url=redis_url,
        model_pretrained="none",
        embed_batch_size=4,
        **s3_settings,
    )


@pytest.fixture
def server_collection(
    server_settings: Settings, embedder: Embedder, open_on_servers: OpenOnServers
) -> Iterator[Collection]:
    with open_on_servers(server_settings, embedder, QdrantClient(location=":memory:")) as opened:
        yield opened


def assert_consistent(collection: Collection, images: int) -> None:
    """Every store holds exactly the visible images, and nothing is half ingested."""
    status = collection.status()
    assert (status.images, status.pending, status.vectors, status.blobs, status.thumbnails) == (images, 0, images, images, images)
    assert status.consistent
    visible = set(collection.backends.catalog.ready_frame()["id"])
    stored = {i for ids, _ in collection.backends.vectors.iter_all() for i in ids}
    assert stored == visible
    for image_id in visible:
        assert collection.backends.blobs.exists(original_key(image_id))
        assert collection.backends.blobs.exists(thumbnail_key(image_id))


def nearest_is_itself(collection: Collection, image_id: str) -> bool:
    query = collection.backends.vectors.fetch([image_id])[0]
    return collection.backends.vectors.search(query, 3)[0].id == image_id


def test_ingest_then_status_and_search_on_the_server_stack(
    server_collection: Collection, image_folder: Callable[..., Path]
) -> None:
    folder = image_folder(7)
    (folder / "notes.png").write_text("not an image")
    report = server_collection.ingest([folder], source="batch-2026-11")
    assert (report.ingested, report.already_present, [r.reason_code for r in report.rejected]) == (7, 0, ["not_an_image"])
    assert report.error is None
    assert_consistent(server_collection, 7)

    status = server_collection.status()
    assert status.backends["catalog"].startswith("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert status.backends["blobs"].startswith("S3 at http://127.0.0.1:")
    assert status.backends["cache"].startswith("Redis at 127.0.0.1:6379")
    assert "secret" not in json.dumps(status.to_json())

    ids = list(server_collection.backends.catalog.ready_frame()["id"])
    assert all(nearest_is_itself(server_collection, i) for i in ids)
    similar = server_collection.search(image_id=ids[0], k=3)
    assert len(similar.results) == 3 and ids[0] not in {r.image_id for r in similar.results}
    by_text = [r.image_id for r in server_collection.search(text="a red car", k=3).results]
    assert by_text == [r.image_id for r in server_collection.search(text="a red car", k=3).results]  # cached
    url = server_collection.thumbnail_url(ids[0])
    assert url is not None and "X-Amz-Signature=" in url

    again = server_collection.ingest([folder], source="batch-2026-12")
    assert (again.ingested, again.already_present) == (0, 7)
    assert server_collection.sources() == ["batch-2026-11", "batch-2026-12"]
    assert_consistent(server_collection, 7)


def test_the_settings_alone_choose_the_server_backends(server_settings: Settings, embedder: Embedder) -> None:
    backends = open_backends(server_settings, embedder.dim)
    try:
        described = backends.describe()
        assert described["catalog"].startswith("postgresql+psycopg://")
        assert described["blobs"].startswith("S3 at ")
        assert described["cache"].startswith("Redis at ")
        assert described["vectors"].startswith("Qdrant Edge shard")  # QDRANT_URL unset
        assert backends.cache.healthy
    finally:
        backends.close()


def test_redis_stopped_mid_run_the_flow_still_succeeds(
    server_settings: Settings,
    embedder: Embedder,
    redis_process: RedisProcess,
    image_folder: Callable[..., Path],
    open_on_servers: OpenOnServers,
) -> None:
    settings = Settings(**{**server_settings.__dict__, "redis_url": redis_process.url})
    with open_on_servers(settings, embedder, QdrantClient(location=":memory:")) as collection:
        cache = collection.backends.cache
        assert collection.ingest([image_folder(4, "first")]).ingested == 4
        cache.set("query:a red car", b"embedding", ttl_s=60)
        assert cache.get("query:a red car") == b"embedding" and cache.healthy
        found = [r.image_id for r in collection.search(text="a red car", k=3).results]

        redis_process.stop()
        assert cache.get("query:a red car") is None
        cache.set("query:a blue car", b"dropped", ttl_s=60)
        assert cache.healthy is False
        assert "unreachable" in collection.status().backends["cache"]
        assert [r.image_id for r in collection.search(text="a red car", k=3).results] == found
        report = collection.ingest([image_folder(4, "second", start=4)])
        assert (report.ingested, report.error) == (4, None)
        assert_consistent(collection, 8)

        redis_process.start()
        cache.retry_after_s = 0  # ask again at once rather than after the usual pause
        assert cache.healthy is True
        cache.set("query:a red car", b"again", ttl_s=60)
        assert cache.get("query:a red car") == b"again"


def test_unreachable_redis_from_the_start_only_slows_the_app(
    settings: Settings, embedder: Embedder, closed_port: int, image_folder: Callable[..., Path]
) -> None:
    with Collection.open(Settings(**{**settings.__dict__, "redis_url": f"redis://127.0.0.1:{closed_port}/0"}), embedder=embedder) as collection:
        assert collection.ingest([image_folder(2)]).ingested == 2
        assert collection.backends.cache.get("anything") is None
        assert collection.backends.cache.healthy is False
        assert collection.status().consistent


REFUSE_READY = """
CREATE FUNCTION refuse_writes() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR (SELECT count(*) FROM images WHERE state = 'ready') >= 4 THEN
        RAISE EXCEPTION 'refused by the test';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql
"""


@pytest.mark.parametrize("refused", ["UPDATE", "UPDATE OR DELETE"], ids=["visibility commit", "rollback too"])
def test_postgres_refusing_a_write_mid_ingest_then_rerun_leaves_stores_consistent(
    server_collection: Collection, image_folder: Callable[..., Path], refused: str
) -> None:
    """The second batch's commit is refused; with "rollback too" the clean-up of its pending rows is
    refused as well, so they stay behind (invisible) until the re-run completes them."""
    engine = server_collection.backends.catalog.engine
    with engine.begin() as conn:
        conn.execute(sa.text(REFUSE_READY))
        conn.execute(sa.text(f"CREATE TRIGGER refuse BEFORE {refused} ON images FOR EACH ROW EXECUTE FUNCTION refuse_writes()"))
    folder = image_folder(8)

    report = server_collection.ingest([folder])
    assert report.ingested == 4 and "refused by the test" in (report.error or "")
    assert len(report.failed) == 4
    status = server_collection.status()
    left_pending = 4 if "DELETE" in refused else 0
    assert (status.images, status.pending, status.vectors, status.blobs) == (4, left_pending, 4, 4)
    visible = set(server_collection.backends.catalog.ready_frame()["id"])
    assert {i for ids, _ in server_collection.backends.vectors.iter_all() for i in ids} == visible

    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse ON images"))
    rerun = server_collection.ingest([folder])
    assert (rerun.ingested, rerun.already_present, rerun.error) == (4, 4, None)
    assert_consistent(server_collection, 8)


# startup checks -----------------------------------------------------------------------------------
def test_startup_check_names_each_unreachable_server_without_passwords(closed_port: int) -> None:
    checks = check_servers(unreachable_settings(closed_port), timeout_s=1)
    by_store = {c.store: c for c in checks}
    assert {s: (c.backend, c.reachable) for s, c in by_store.items()} == {
        "catalog": ("postgresql", False),
        "vectors": ("qdrant", False),
        "blobs": ("s3", False),
        "cache": ("redis", False),
    }
    assert by_store["catalog"].configured == f"DATABASE_URL=postgresql://***@127.0.0.1:{closed_port}/test"
    assert by_store["cache"].ok and not by_store["catalog"].ok  # Redis is optional
    message = unreachable_message(checks) or ""
    for store in ("catalog (postgresql", "vectors (qdrant", "blobs (s3"):
        assert store in message
    assert "cache" not in message
    shown = repr(checks) + message + "\n".join(c.line() for c in checks)
    assert not [s for s in SECRETS if s in shown]


def test_startup_check_passes_on_the_running_servers(server_settings: Settings) -> None:
    checks = check_servers(server_settings)
    assert [(c.store, c.backend, c.reachable) for c in checks] == [
        ("catalog", "postgresql", True),
        ("vectors", "qdrant-edge", True),
        ("blobs", "s3", True),
        ("cache", "redis", True),
    ]
    assert unreachable_message(checks) is None


@pytest.mark.parametrize("server", ["qdrant", "s3"])
def test_opening_on_an_unreachable_server_names_it_without_secrets(
    settings: Settings, embedder: Embedder, closed_port: int, server: str
) -> None:
    where = f"http://127.0.0.1:{closed_port}"
    if server == "qdrant":
        changes = {"qdrant_url": where, "qdrant_api_key": "qdrant-key-w0rd"}
    else:
        changes = {"s3_endpoint": where, "s3_access_key": "s3-access-w0rd", "s3_secret_key": "s3-secret-w0rd"}
    with pytest.raises(Unavailable) as failure:
        Collection.open(Settings(**{**settings.__dict__, **changes}), embedder=embedder)
    assert where in str(failure.value)
    assert not [s for s in SECRETS if s in str(failure.value)]


def test_health_command_exits_2_and_prints_no_secret(
    closed_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = unreachable_settings(closed_port)
    env = {
        "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url, "QDRANT_URL": settings.qdrant_url,
        "QDRANT_API_KEY": settings.qdrant_api_key, "S3_ENDPOINT": settings.s3_endpoint,
        "S3_ACCESS_KEY": settings.s3_access_key, "S3_SECRET_KEY": settings.s3_secret_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    assert cli_main(["check", "--json", "--timeout", "1"]) == 2
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer["ok"] is False and len(answer["checks"]) == 4
    assert not [s for s in SECRETS if s in out + err]



def _analysis_answers(collection: Collection) -> tuple[list, list, int]:
    """What an analyst would read off: duplicate clusters by file name, the anomaly ranking, map size."""
    clusters = sorted(sorted(Path(m.image.file_name).name for m in g.members) for g in collection.duplicates().groups)
    ranking = [Path(r.image.file_name).name for r in collection.anomalies(method="knn", k=5).rows]
    return clusters, ranking, len(collection.projection())


def test_whole_flow_gives_the_same_answers_on_servers_and_embedded(
    server_collection: Collection, collection: Collection, image_folder: Callable[..., Path]
) -> None:
    folder = image_folder(12)
    copy = folder / "copy_of_3.png"
    copy.write_bytes(encode(Image.open(folder / "sub0" / "img_0003.jpg"), "PNG"))
    answers = []
    for stack in (collection, server_collection):
        report = stack.ingest([folder], source="flow")
        assert report.ingested == 13
        by_name = {Path(o.file).name: o for o in report.outcomes}
        assert by_name["copy_of_3.png"].image_id is not None
        assert stack.search(image=copy.read_bytes(), k=1).results[0].score == pytest.approx(1.0, abs=1e-3)
        answers.append(_analysis_answers(stack))
    embedded, servers = answers
    assert servers == embedded
    clusters = embedded[0]
    assert any({"copy_of_3.png", "img_0003.jpg"} <= set(c) for c in clusters), clusters
