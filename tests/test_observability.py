"""Metrics an operator scrapes and log lines a collector parses, checked after real work."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures_servers import SECRETS, unreachable_settings
from prometheus_client.parser import text_string_to_metric_families

from core import observability
from core.collection import Collection
from core.health import check_servers
from core.settings import Settings
from core.synthetic import encode, photo

pytest_plugins = ("fixtures_servers",)
pytestmark = pytest.mark.filterwarnings("ignore:.*insecure connection.*:UserWarning")

Samples = dict[tuple[str, frozenset], float]


def scrape(port: int) -> Samples:
    """Every sample the metrics endpoint serves, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The product's log events as JSON lines in a buffer, for the length of one test."""
    stream = io.StringIO()
    handler = observability.configure_logging("json", stream=stream)
    try:
        yield stream
    finally:
        observability.logger.removeHandler(handler)


def mixed_folder(image_folder: Callable[..., Path]) -> Path:
    """Three images, a byte-identical copy of one, and a text file posing as a PNG."""
    folder = image_folder(3)
    (folder / "copy.jpg").write_bytes(encode(photo(0)))
    (folder / "notes.png").write_text("not an image")
    return folder


def test_metrics_endpoint_counts_an_ingest(collection: Collection, image_folder: Callable[..., Path]) -> None:
    port = observability.start_metrics_server(0, addr="127.0.0.1")
    assert observability.start_metrics_server(0, addr="127.0.0.1") == port  # once per process
    before = scrape(port)

    report = collection.ingest([mixed_folder(image_folder)], source="metrics-test")
    observability.record_page_view("Search")
    collection.search(text="a red car", k=2)
    collection.search(image_id=collection.backends.catalog.ready_frame()["id"][0], k=2)

    after = scrape(port)
    assert (report.ingested, report.already_present, len(report.rejected)) == (3, 1, 1)
    assert moved(before, after, "images_ingested_total") == 3
    assert moved(before, after, "images_already_present_total") == 1
    assert moved(before, after, "images_rejected_total", reason="not_an_image") == 1
    count = "image_processing_duration_seconds_count"
    assert {op: moved(before, after, count, operation=op) for op in ("read", "hash", "decode", "embed", "store")} == {
        "read": 5, "hash": 5, "decode": 4, "embed": 1, "store": 2,  # the copy is known before decoding
    }
    assert moved(before, after, "image_processing_duration_seconds_sum", operation="embed") > 0
    assert moved(before, after, "http_requests_total", method="GET", endpoint="Search", status="200") == 1
    searches = "vector_search_duration_seconds_count"
    assert moved(before, after, searches, search_type="text") == moved(before, after, searches, search_type="similar_to") == 1


def test_ingest_log_lines_are_json_objects_without_bytes(
    collection: Collection, image_folder: Callable[..., Path], json_log: io.StringIO
) -> None:
    collection.ingest([mixed_folder(image_folder)], source="logs-test")
    collection.search(text="a private query", k=2)
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert lines and all({"time", "level", "event"} <= set(line) for line in lines)
    by_event: dict[str, list[dict]] = {}
    for line in lines:
        by_event.setdefault(line["event"], []).append(line)
    assert len(by_event["image_ingested"]) == 3
    assert all(line["source"] == "logs-test" and len(line["image_id"]) == 36 for line in by_event["image_ingested"])
    assert by_event["image_rejected"][0]["reason"] == "not_an_image"
    assert by_event["image_rejected"][0]["level"] == "warning"
    (summary,) = by_event["ingest_finished"]
    assert (summary["ingested"], summary["already_present"], summary["rejected"], summary["uploader"]) == (3, 1, 1, collection.actor.name)
    assert summary["duration_s"] > 0
    (search,) = by_event["search"]
    assert (search["search_type"], search["k"], search["hits"]) == ("text", 2, 2)
    assert "a private query" not in json_log.getvalue()  # what people search for is theirs
    assert max(len(line) for line in json_log.getvalue().splitlines()) < 2_000  # no image bytes


def test_log_lines_never_carry_secrets(json_log: io.StringIO, closed_port: int) -> None:
    settings = unreachable_settings(closed_port)
    check_servers(settings, timeout_s=1)
    observability.log_event("startup", settings=settings.public())
    observability.log_event(
        "login", user="ana", password="pg-pass-w0rd", api_key="qdrant-key-w0rd",
        target=f"redis://:redis-pass-w0rd@127.0.0.1:{closed_port}/0", upload=b"\xff\xd8\xff\xe0 jpeg bytes",
        nested={"S3_SECRET_KEY": "s3-secret-w0rd", "items": ["ok", b"\x00" * 10]},
    )
    text = json_log.getvalue()
    assert not [s for s in SECRETS if s in text]
    lines = [json.loads(line) for line in text.splitlines()]
    assert sum(line["event"] == "startup_check" for line in lines) == 4
    (startup,) = [line for line in lines if line["event"] == "startup"]
    assert startup["settings"]["api_token_ttl_s"] == "3600"  # named "token", but a lifetime, not a secret
    assert startup["settings"]["s3_secret_key"] == startup["settings"]["qdrant_api_key"] == "***"
    login = next(line for line in lines if line["event"] == "login")
    assert login["password"] == login["api_key"] == "***"
    assert login["target"] == f"redis://***@127.0.0.1:{closed_port}/0"
    assert login["upload"] == "<15 bytes>"
    assert login["nested"] == {"S3_SECRET_KEY": "***", "items": ["ok", "<10 bytes>"]}


def test_text_log_format_is_one_readable_line() -> None:
    stream = io.StringIO()
    handler = observability.configure_logging("text", stream=stream)
    try:
        observability.log_event("search", logging.WARNING, search_type="image", hits=3)
    finally:
        observability.logger.removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("warning search search_type=image hits=3")
    with pytest.raises(ValueError, match="not one of text, json"):
        observability.configure_logging("xml")


def test_settings_turn_on_json_logs_and_the_metrics_server() -> None:
    settings = Settings.from_env({"LOG_FORMAT": "json", "METRICS_PORT": "9464"})
    assert (settings.log_format, settings.metrics_port) == ("json", 9464)
    assert Settings.from_env({}).metrics_port is None
