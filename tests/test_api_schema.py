"""The API against its own OpenAPI document: the committed copy matches the app, and a bounded
schemathesis run (generated requests to every operation, with an admin's token) finds no 5xx and
no response that contradicts the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.app import create_app
from api.openapi import DOCUMENT, render
from core.collection import Collection
from core.embedding import Embedder
from core.settings import Settings
from core.synthetic import encode, photo

PASSWORD = "correct horse battery"


@pytest.fixture
def api_app(tmp_path: Path, embedder: Embedder) -> Iterator[FastAPI]:
    data = Settings(data_dir=tmp_path / "data", model_pretrained="none", api_rate_limit=100_000)
    with Collection.open(data, embedder=embedder) as collection:
        collection.add_user("admin", "admin", PASSWORD)
        collection.ingest_uploads([(f"{i}.jpg", encode(photo(i))) for i in range(4)])
        yield create_app(collection)


def test_committed_openapi_document_matches_the_app(api_app: FastAPI) -> None:
    assert DOCUMENT.read_text() == render(api_app.openapi()), "run `python -m api.openapi` and commit docs/openapi.json"


def test_generated_requests_get_no_5xx_and_match_the_schema(api_app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    headers = {"Authorization": f"Bearer {api_app.state.api.signer.issue('admin').access_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def generated(case: schemathesis.Case) -> None:
            # timeout: schemathesis' 10 s default is shorter than a first analysis on a busy shared CPU
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance],
                                   timeout=120)

        generated()
