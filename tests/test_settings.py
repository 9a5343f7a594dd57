"""Settings: read from the environment in one place, validated early, documented, never leaking secrets."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import embedding
from core.cli import build_parser
from core.embedding import Embedder, ModelUnavailable
from core.settings import SETTINGS_TABLE, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]


def test_unset_server_variables_mean_the_embedded_default() -> None:
    settings = Settings.from_env({"DATA_DIR": "/tmp/x"})
    assert settings.data_dir == Path("/tmp/x")
    assert (settings.database_url, settings.qdrant_url, settings.s3_endpoint, settings.redis_url) == (None,) * 4
    assert settings.model_pretrained == "laion2b_s34b_b79k" and not settings.random_weights
    assert Settings.from_env({"MODEL_PRETRAINED": "none"}).random_weights


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EMBED_BATCH_SIZE": "lots"}, "EMBED_BATCH_SIZE"),
        ({"MAX_UPLOAD_MB": "0"}, "MAX_UPLOAD_MB"),
        ({"DEVICE": "tpu"}, "DEVICE"),
        ({"PRECISION": "int4"}, "PRECISION"),
        ({"RUNTIME": "tensorrt"}, "RUNTIME"),
        ({"S3_ENDPOINT": "http://127.0.0.1:9000"}, "S3_ACCESS_KEY"),
        ({"MODEL_CHECKPOINT": "/nonexistent/weights.pt"}, "MODEL_CHECKPOINT"),
    ],
)
def test_bad_values_are_rejected_with_the_variable_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_public_view_hides_secrets_and_url_passwords() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app:hunter2@db:5432/images",
            "S3_ENDPOINT": "http://minio:9000",
            "S3_ACCESS_KEY": "AKIAEXAMPLE",
            "S3_SECRET_KEY": "s3cr3t",
            "QDRANT_API_KEY": "qk",
            "REDIS_URL": "redis://:redispw@cache:6379/0",
        }
    )
    shown = str(settings.public()) + repr(settings)
    for secret in ("hunter2", "AKIAEXAMPLE", "s3cr3t", "qk'", "redispw"):
        assert secret not in shown
    assert "db:5432/images" in shown


def test_readme_documents_every_setting_and_command() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.M))
    assert documented == {s.env for s in SETTINGS_TABLE}
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in commands:
        assert f"`{command}`" in readme or f"visual-anomaly {command}" in readme, command


def test_unreachable_pretrained_weights_fail_fast_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding, "_cached_pretrained_file", lambda cfg: None)
    monkeypatch.setattr(embedding, "_reachable", lambda host, port=443, timeout_s=3.0: False)
    start = time.monotonic()
    with pytest.raises(ModelUnavailable) as raised:
        Embedder(Settings(model_pretrained="laion2b_s34b_b79k"))
    assert time.monotonic() - start < 10
    assert "MODEL_CHECKPOINT" in str(raised.value) and "MODEL_PRETRAINED=none" in str(raised.value)


def test_embedding_size_is_read_without_importing_open_clip() -> None:
    """An analysis-only process (the CLI's `duplicates`) opens a collection without OpenCLIP's ~0.2 GB."""
    import open_clip

    script = ("import sys; from core.embedding import resolve_embedding_dim as dim; "
              "print([dim(m) for m in ('ViT-B-32', 'RN50', 'ViT-L-14')], 'open_clip' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    expected = [open_clip.get_model_config(m)["embed_dim"] for m in ("ViT-B-32", "RN50", "ViT-L-14")]
    assert out.split()[-1] == "False" and out.strip().startswith(str(expected))
    with pytest.raises(ModelUnavailable, match="not an OpenCLIP architecture"):
        embedding.resolve_embedding_dim("No-Such-Architecture")


def test_unknown_pretrained_tag_lists_the_known_ones() -> None:
    with pytest.raises(ModelUnavailable, match="laion2b_s34b_b79k"):
        Embedder(Settings(model_pretrained="no-such-tag"))


def test_random_weights_are_identical_in_every_process(embedder: Embedder) -> None:
    """Random weights must not change between the CLI and the app, or their vectors would disagree."""
    from core.synthetic import photo

    other = Embedder(Settings(model_pretrained="none", precision=embedder.precision))
    images = [photo(1), photo(2)]
    same = (embedder.embed_images(images) * other.embed_images(images)).sum(axis=1)
    assert same.min() > 0.999
    assert embedder.info.random_weights and "random" in embedder.info.weights
