"""Folders and files an ordinary but hostile user can make: pipes, devices, links that loop or leave
the folder, truncated JPEGs, a DATA_DIR that cannot be, a read-only collection, non-finite options."""

from __future__ import annotations

import ctypes
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from core.cli import main as cli_main
from core.collection import Collection
from core.embedding import Embedder
from core.errors import InvalidRequest
from core.images import ImageRejected, prepare_image
from core.ingest import IngestReport, read_regular_file
from core.settings import Settings
from core.synthetic import encode, photo

ROOT = Path(__file__).resolve().parents[1]


def _ingest_within(collection: Collection, paths: list[Path], seconds: float = 240) -> IngestReport:
    """The ingest's report, or a failure (not a hung test) when it does not finish in time."""
    done: list[IngestReport] = []
    worker = threading.Thread(target=lambda: done.append(collection.ingest(paths)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert done, f"the ingest did not finish within {seconds} s"
    return done[0]


def test_pipes_devices_sockets_and_bad_links_are_skipped_with_a_reason_and_the_rest_stored(
    collection: Collection, image_folder: Callable[..., Path], tmp_path: Path
) -> None:
    folder = image_folder(3)
    os.mkfifo(folder / "pipe.png")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "self.jpg").symlink_to(folder / "self.jpg")
    (folder / "a.jpg").symlink_to(folder / "b.jpg")
    (folder / "b.jpg").symlink_to(folder / "a.jpg")
    (folder / "gone.jpg").symlink_to(tmp_path / "nothing-here.jpg")
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(encode(photo(50)))
    (folder / "outside.jpg").symlink_to(outside / "secret.jpg")
    (folder / "outside-folder").symlink_to(outside)
    (folder / "inside.jpg").symlink_to(folder / "img_0000.jpg")  # the same file, inside: read once
    named = tmp_path / "named-zero.jpg"  # a link named on the command line is taken as given
    named.symlink_to("/dev/zero")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.jpg"))
    try:
        report = _ingest_within(collection, [folder, named])
    finally:
        server.close()

    by_name = {Path(o.file).name: o for o in report.outcomes}
    assert report.ingested == 3 and report.error is None
    assert "inside.jpg" not in by_name or by_name["inside.jpg"].status == "already_present"
    assert by_name["pipe.png"].reason_code == "not_a_file" and "named pipe" in (by_name["pipe.png"].reason or "")
    assert by_name["named-zero.jpg"].reason_code == "not_a_file" and "device" in (by_name["named-zero.jpg"].reason or "")
    assert by_name["sock.jpg"].reason_code == "not_a_file" and "socket" in (by_name["sock.jpg"].reason or "")
    for name in ("self.jpg", "a.jpg", "b.jpg"):
        assert by_name[name].reason_code == "unreadable" and "loops" in (by_name[name].reason or ""), name
    assert by_name["gone.jpg"].reason_code == "unreadable"
    for name in ("outside.jpg", "outside-folder", "zero.jpg"):
        assert by_name[name].reason_code == "outside_folder" and "outside the folder" in (by_name[name].reason or "")
    status = collection.status()
    assert (status.images, status.vectors, status.blobs) == (3, 3, 3) and status.consistent
    assert all(Path(n.file_name).name != "secret.jpg" for i in collection.snapshot().ids for n in collection.names(i))


def test_the_read_stops_one_byte_past_the_limit_whatever_stat_says(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "sparse.jpg"
    with open(big, "wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB that costs no disk
    read: list[int] = []
    real_read = os.read
    monkeypatch.setattr("core.ingest.os.read", lambda fd, n: read.append(n) or real_read(fd, n))
    with pytest.raises(ImageRejected) as refused:
        read_regular_file(big, 2 << 20)
    assert refused.value.reason == "too_large" and sum(read) == (2 << 20) + 1
    with pytest.raises(ImageRejected) as device:
        read_regular_file(Path("/dev/zero"), 2 << 20)
    assert device.value.reason == "not_a_file"


def _truncated_jpeg() -> bytes:
    """A real 16x16 JPEG whose frame header is rewritten to announce 10000x10000."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(out, "JPEG", quality=90)
    data = bytearray(out.getvalue())
    frame = data.find(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", 10000, 10000)
    return bytes(data)


def test_a_jpeg_whose_header_claims_more_pixels_than_its_data_holds_is_rejected_as_truncated(
    collection: Collection,
) -> None:
    data = _truncated_jpeg()
    assert len(data) < 1000
    with pytest.raises(ImageRejected) as refused:
        prepare_image(data, max_bytes=10 << 20, max_pixels=100_000_000)
    assert refused.value.reason == "corrupt" and "truncated" in str(refused.value)
    report = collection.ingest_uploads([("huge.jpg", data), ("ok.jpg", encode(photo(3)))])
    assert [o.status for o in report.outcomes] == ["rejected", "ingested"]
    assert collection.status().images == 1


def test_a_folder_of_empty_files_never_loads_the_model(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    for i in range(5000):
        (folder / f"e{i:05d}.jpg").touch()
    with Collection.open(settings) as collection:  # no embedder given: it would load on first use
        report = collection.ingest([folder])
        assert len(report.rejected) == 5000 and {o.reason_code for o in report.rejected} == {"empty"}
        assert collection.model_info() is None


@pytest.mark.parametrize("command", [["search", "--text", "x", "--min-score", "nan"],
                                     ["anomalies", "--threshold", "inf"],
                                     ["duplicates", "--cosine", "nan"]])
def test_non_finite_options_are_refused_naming_the_option(command: list[str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(command)
    assert exited.value.code == 2
    option = command[-2]
    assert f"argument {option}" in capsys.readouterr().err


def test_the_facade_refuses_non_finite_thresholds(collection: Collection) -> None:
    with pytest.raises(InvalidRequest) as refused:
        collection.search(text="x", min_score=float("nan"))
    assert refused.value.field == "min_score"
    with pytest.raises(InvalidRequest) as anomalies:
        collection.anomalies(threshold=float("nan"))
    assert anomalies.value.field == "threshold"


def test_a_data_dir_that_is_a_file_or_under_one_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a folder")
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    for data_dir, problem in ((a_file, "is not a folder"), (a_file / "below", "is a file")):
        monkeypatch.setenv("DATA_DIR", str(data_dir))
        assert cli_main(["status"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"visual-anomaly: DATA_DIR={data_dir}") and problem in err


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder another user can reach (pytest's own is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="va-hostile-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder, _dirs, _files in os.walk(path):
            os.chmod(folder, 0o755)
        shutil.rmtree(path, ignore_errors=True)


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _obey_file_modes() -> None:
    """In the child, before exec: root drops the capabilities that let it write through any file
    mode, so read-only files are read-only to it as to anyone (a no-op for other users)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _as_another_user(args: list[str], data_dir: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    """The CLI run by a user who may read but not write the collection's files, with the product's
    own settings (`PRECISION=auto`: a collection that cannot record a start-up measurement takes
    none, where it used to measure bf16 again at every start, half a minute a command)."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "DATA_DIR": str(data_dir),
           "MODEL_PRETRAINED": "none", "HOME": str(scratch), "NUMBA_CACHE_DIR": str(scratch / "numba")}
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=_obey_file_modes)


def test_a_data_dir_under_a_read_only_folder_is_one_line_naming_it(shared_tmp: Path) -> None:
    locked = shared_tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    scratch = shared_tmp / "scratch"
    scratch.mkdir(mode=0o777)
    scratch.chmod(0o777)
    done = _as_another_user(["status"], locked / "data", scratch)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"visual-anomaly: DATA_DIR={locked / 'data'} cannot be created: {locked} is "
                                   "read-only for this user; create the folder first or point DATA_DIR somewhere writable.")


def test_read_only_commands_work_on_a_read_only_collection(shared_tmp: Path, embedder: Embedder) -> None:
    data_dir = shared_tmp / "data"
    settings = Settings(data_dir=data_dir, model_pretrained="none")
    with Collection.open(settings, embedder=embedder) as collection:
        collection.ingest_uploads([(f"p{i}.jpg", encode(photo(i))) for i in range(4)])
    for folder, _dirs, files in os.walk(data_dir):
        for name in files:
            os.chmod(Path(folder) / name, 0o444)
        os.chmod(folder, 0o555)
    scratch = shared_tmp / "scratch"
    scratch.mkdir()
    scratch.chmod(0o777)

    status = _as_another_user(["status", "--json"], data_dir, scratch)
    assert status.returncode == 0, status.stderr[-2000:]
    counts = json.loads(status.stdout)
    assert (counts["images"], counts["vectors"], counts["blobs"]) == (4, 4, 4)
    search = _as_another_user(["search", "--text", "a photo", "--json"], data_dir, scratch)
    assert search.returncode == 0, search.stderr[-2000:]
    assert len(json.loads(search.stdout)["results"]) == 4
    duplicates = _as_another_user(["duplicates", "--json"], data_dir, scratch)
    assert duplicates.returncode == 0 and json.loads(duplicates.stdout)["images"] == 4, duplicates.stderr[-2000:]
    # a write says what is wrong, and the files stay as they were
    ingest = _as_another_user(["ingest", str(scratch), "--json"], data_dir, scratch)
    assert ingest.returncode == 0 and json.loads(ingest.stdout)["ingested"] == 0
    assert sorted(p.name for p in (data_dir / "blobs" / "originals").iterdir()) == sorted(
        json.loads(search.stdout)["results"][i]["image_id"] for i in range(4))
