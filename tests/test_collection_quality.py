"""Image properties, quality flags and reasons through the facade, the CLI and the catalog backends."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image, ImageDraw

from core import FLAG_COLUMNS, ISSUE_COLUMNS, Collection, InvalidRequest, Settings
from core.cli import main as cli_main
from core.embedding import Embedder
from core.storage.catalog import MIGRATIONS
from core.storage.catalog_properties import add_properties_table
from core.synthetic import encode


def drawing(seed: int) -> Image.Image:
    """Coloured line art on white, 256 px square: an ordinary image of this collection."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (256, 256), "white")
    pen = ImageDraw.Draw(image)
    for _ in range(10):
        pen.line([tuple(int(v) for v in rng.integers(0, 256, 2)), tuple(int(v) for v in rng.integers(0, 256, 2))],
                 fill=tuple(int(c) for c in rng.integers(0, 200, 3)), width=4)
    return image


FILES = [(f"drawing{i:02d}.png", encode(drawing(i), "PNG")) for i in range(60)] + [
    ("strip.png", encode(drawing(99).resize((2000, 40)), "PNG")),
    ("transparent.png", encode(Image.new("RGBA", (256, 256), (0, 0, 0, 0)), "PNG")),
]


def test_anomalies_and_issues_name_the_odd_files_with_their_reasons(collection: Collection) -> None:
    collection.ingest_uploads(FILES)
    view = collection.anomalies()
    assert view.method == "fused"
    top = {r.image.file_name: r for r in view.rows[:4]}
    assert {"strip.png", "transparent.png"} <= set(top)
    assert "odd aspect" in top["strip.png"].reasons
    assert "mostly transparent" in top["transparent.png"].reasons
    assert {f.name for f in top["transparent.png"].flags} >= {"mostly_transparent"}

    issues = collection.issues(flag="odd_aspect")
    assert [r.image.file_name for r in issues.rows] == ["strip.png"]
    assert issues.rows[0].value == pytest.approx(50.0) and issues.rows[0].property == "aspect"
    everything = collection.issues()
    assert {r.image.file_name for r in everything.rows} >= {"strip.png", "transparent.png"}
    assert not {r.image.file_name for r in collection.issues(z_threshold=1000).rows}
    with pytest.raises(InvalidRequest, match="flag"):
        collection.issues(flag="ugly")
    with pytest.raises(InvalidRequest, match="z_threshold"):
        collection.anomalies(z_threshold=0)

    detail = collection.image_detail(top["transparent.png"].image.image_id)
    assert detail.properties is not None and detail.properties.transparent_share == 1.0
    assert "mostly_transparent" in {f.name for f in detail.flags} and detail.reasons


def test_cli_writes_reasons_and_flag_columns_and_lists_issues(
    collection: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    collection.ingest_uploads(FILES)
    monkeypatch.setenv("DATA_DIR", str(collection.settings.data_dir))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    anomalies_csv, issues_csv = tmp_path / "anomalies.csv", tmp_path / "issues.csv"
    assert cli_main(["anomalies", "--top", "2", "--csv", str(anomalies_csv)]) == 0
    out = capsys.readouterr().out
    assert "scored with fused" in out
    rows = {r["file_name"]: r for r in csv.DictReader(anomalies_csv.open())}
    assert len(rows) == len(FILES)
    assert set(FLAG_COLUMNS) <= set(next(iter(rows.values())))
    assert float(rows["strip.png"]["flag_odd_aspect"]) == pytest.approx(50.0)
    assert rows["drawing00.png"]["flag_odd_aspect"] == ""
    assert "mostly transparent" in rows["transparent.png"]["reasons"]

    assert cli_main(["issues", "--flag", "mostly_transparent", "--csv", str(issues_csv), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    listed = list(csv.DictReader(issues_csv.open()))
    assert [r["file_name"] for r in listed] == ["transparent.png"] == [r["file_name"] for r in answer["rows"]]
    assert tuple(listed[0]) == ISSUE_COLUMNS
    assert cli_main(["issues"]) == 0
    assert "strip.png" in capsys.readouterr().out
    assert cli_main(["issues", "--z", "-1"]) == 2
    assert "z_threshold" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_repair_measures_images_stored_before_properties_existed(
    backend: str, settings: Settings, embedder: Embedder, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        settings = replace(settings, database_url=request.getfixturevalue("postgres_url"), auth_secret="k" * 40)
    with Collection.open(settings, embedder=embedder) as collection:
        collection.ingest_uploads(FILES[:20] + FILES[-2:])
        catalog = collection.backends.catalog
        with catalog.engine.begin() as conn:  # as an older version left it: no properties table
            conn.execute(sa.text("DROP TABLE image_properties"))
            before = MIGRATIONS.index(add_properties_table)
            conn.execute(sa.text(f"UPDATE meta SET value = '{before}' WHERE key = 'schema_version'"))
    with Collection.open(settings, embedder=embedder) as collection:  # the migration adds the table again
        catalog = collection.backends.catalog
        assert catalog.schema_version() == len(MIGRATIONS)
        assert len(catalog.ids_without_properties()) == 22
        assert not collection.issues().rows  # unmeasured images are never flagged
        report = collection.repair()
        assert report.properties_added == 22 and report.sketches_added == 0
        assert catalog.ids_without_properties() == []
        assert [r.image.file_name for r in collection.issues(flag="odd_aspect").rows] == ["strip.png"]
        assert collection.repair().properties_added == 0
