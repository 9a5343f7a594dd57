"""Names that try to forge lines, drive the terminal or run as spreadsheet formulas, and store errors
that would leak SQL: what people and programs see stays inert and says nothing secret."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from core import csv_chunks, printable
from core.cli import main as cli_main
from core.collection import Collection
from core.embedding import Embedder
from core.ingest import IngestItem, Ingestor
from core.settings import Settings
from core.synthetic import encode, photo

FORGED = "x.txt: fine\n  rejected other.jpg"
TERMINAL = "\x1b]0;owned\x07\x1b[2Jclear.jpg"
FORMULAS = ["=HYPERLINK(1).jpg", "+1.jpg", "-2.jpg", "@SUM(1).jpg", "\tTAB.jpg"]


def test_printable_escapes_control_and_invisible_characters_only() -> None:
    assert printable("plain é name.jpg") == "plain é name.jpg"
    assert printable("a\nb") == "a\\nb"
    assert printable("\x1b[2J") == "\\x1b[2J"
    assert printable("gpj\u202eexe") == "gpj\\u202eexe"
    assert printable("bad\udcff") == "bad\\udcff"


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised_and_numbers_stay_numbers() -> None:
    rows = [{"file_name": name, "score": -1.5} for name in FORMULAS] + [{"file_name": "plain.jpg", "score": 2}]
    parsed = list(csv.DictReader("".join(csv_chunks(rows, ["file_name", "score"], chunk=2)).splitlines()))
    assert [r["file_name"] for r in parsed] == ["'" + n for n in FORMULAS] + ["plain.jpg"]
    assert [float(r["score"]) for r in parsed] == [-1.5] * len(FORMULAS) + [2.0]


def test_cli_outputs_escape_hostile_names_and_csv_exports_neutralise_formulas(
    settings: Settings, image_folder: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = image_folder(3)
    (folder / FORGED).write_text("not an image")
    (folder / (TERMINAL + ".txt")).write_text("not an image either")
    for i, name in enumerate(FORMULAS):
        (folder / name).write_bytes(encode(photo(40 + i)))
    (folder / TERMINAL).write_bytes(encode(photo(30)))
    (folder / "copy.jpg").write_bytes(encode(photo(30)))  # the same bytes: duplicates lists both names
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    monkeypatch.chdir(folder)  # names as given: "=HYPERLINK(1).jpg", not a path starting with "/"

    outputs = {}
    anomalies_csv, duplicates_csv = tmp_path / "anomalies.csv", tmp_path / "duplicates.csv"
    for name, argv in (("ingest", ["ingest", "."]), ("search", ["search", "--text", "x", "--k", "50"]),
                       ("duplicates", ["duplicates", "--csv", str(duplicates_csv)]),
                       ("anomalies", ["anomalies", "--csv", str(anomalies_csv)])):
        assert cli_main(argv) == 0, name
        outputs[name] = capsys.readouterr().out
    assert "rejected" in outputs["ingest"] and "\\n  rejected other.jpg" in outputs["ingest"]
    for name, out in outputs.items():
        assert "\x1b" not in out and "\x07" not in out, name
        assert not any(line.startswith("  rejected other.jpg") for line in out.splitlines()), name
    assert "\\x1b]0;owned\\x07" in outputs["search"] and "\\x1b]0;owned" in outputs["duplicates"]

    with open(anomalies_csv, newline="", encoding="utf-8") as handle:
        names = {row["file_name"].removeprefix("'"): row["file_name"] for row in csv.DictReader(handle)}
    for name in FORMULAS:
        assert names[name].startswith("'"), name
    assert all(float(row["score"]) == float(row["score"]) for row in csv.DictReader(anomalies_csv.open()))


def test_a_store_failure_on_postgresql_reports_no_sql_and_no_other_files(
    settings: Settings, embedder: Embedder, postgres_url: str
) -> None:
    """A name the catalog cannot store (bypassing the name check, as a new caller might): the batch
    fails, and its reason is the driver's first line, never the statement and its parameters."""
    settings = replace(settings, database_url=postgres_url)
    with Collection.open(settings, embedder=embedder) as collection:
        items = [IngestItem("nul\x00.jpg", lambda _m: encode(photo(1)))]
        items += [IngestItem(f"secret-{i}.jpg", lambda _m, i=i: encode(photo(10 + i))) for i in range(3)]
        report = Ingestor(settings, collection.backends, lambda: embedder).run(items, source="s", uploader="u")
        assert report.error is not None and {o.status for o in report.outcomes} == {"failed"}
        for text in [report.error] + [o.reason or "" for o in report.outcomes]:
            assert "INSERT" not in text and "%(" not in text and "secret-" not in text and len(text) < 400, text
        assert "NUL" in report.error
        assert collection.status().consistent and collection.status().images == 0
