"""The Streamlit pages render what the facade returns (AppTest drives them in-process)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.collection import Collection
from core.settings import Settings
from core.synthetic import encode, photo

APP = Path(__file__).resolve().parents[1] / "app"


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    monkeypatch.syspath_prepend(str(APP))
    st.cache_resource.clear()
    yield tmp_path / "data"
    st.cache_resource.clear()
    sys.modules.pop("shared", None)


def test_home_shows_counts_backends_and_random_weights_warning(app_env: Path) -> None:
    with Collection.open(Settings(data_dir=app_env, model_pretrained="none")) as seeded:
        seeded.ingest_uploads([("a.jpg", encode(photo(1))), ("b.jpg", encode(photo(2)))])
    at = AppTest.from_file(str(APP / "Home.py"), default_timeout=60).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "2" and metrics["Vectors"] == "2"
    assert any("Random weights" in w.value for w in at.warning)
    assert "Qdrant Edge" in str(at.table[0].value)


def test_home_opens_without_loading_unavailable_weights(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import embedding

    monkeypatch.setenv("MODEL_PRETRAINED", "laion2b_s34b_b79k")
    monkeypatch.setattr(embedding, "_cached_pretrained_file", lambda cfg: None)
    monkeypatch.setattr(embedding, "_reachable", lambda host, port=443, timeout_s=3.0: False)
    at = AppTest.from_file(str(APP / "Home.py"), default_timeout=60).run()
    assert not at.exception
    assert any("laion2b_s34b_b79k" in c.value for c in at.caption)
