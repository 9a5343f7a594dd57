"""``visual-anomaly users ...`` in-process: passwords from stdin, one-line errors with the domain
error's exit status, the first admin shown once, and the local admin named by ``status``."""

from __future__ import annotations

import getpass
import io
import json
import logging
import stat
from pathlib import Path

import bcrypt
import pytest

from core import Collection, Settings
from core.cli import main
from core.synthetic import encode, photo


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    real = bcrypt.gensalt
    monkeypatch.setattr(bcrypt, "gensalt", lambda rounds=12, prefix=b"2b": real(4, prefix))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    return tmp_path / "data"


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", _Pipe(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def authenticate(data_dir: Path, name: str, password: str) -> str:
    with Collection.open(Settings(data_dir=data_dir, model_pretrained="none")) as collection:
        return collection.authenticate(name, password).role.value


def test_users_lifecycle_with_passwords_from_stdin(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, capsys, "users", "add", "ana", "--role", "analyst", stdin="first password\n")[0] == 0
    assert run(monkeypatch, capsys, "users", "add", "root", "--role", "admin", stdin="root password\n")[0] == 0
    assert authenticate(data_dir, "ana", "first password") == "analyst"

    code, out, _ = run(monkeypatch, capsys, "users", "list", "--json")
    assert code == 0
    assert [(u["name"], u["role"], u["disabled"]) for u in json.loads(out)["users"]] == [
        ("ana", "analyst", False), ("root", "admin", False)]

    assert run(monkeypatch, capsys, "users", "passwd", "ana", stdin="second password\n")[0] == 0
    assert authenticate(data_dir, "ana", "second password") == "analyst"
    assert run(monkeypatch, capsys, "users", "disable", "ana")[0] == 0
    code, out, _ = run(monkeypatch, capsys, "users", "list")
    assert "ana" in out and "disabled" in out
    assert run(monkeypatch, capsys, "users", "remove", "ana", "--json")[1].strip() == '{"name": "ana", "removed": true}'
    code, _, err = run(monkeypatch, capsys, "users", "remove", "ana")
    assert (code, err.strip()) == (2, "visual-anomaly: No user 'ana'.")


def test_a_terminal_is_asked_twice_and_a_mismatch_changes_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal())
    answers = iter(["typed password", "typed pasword"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    assert main(["users", "add", "ana", "--role", "viewer"]) == 2
    assert "differ" in capsys.readouterr().err
    answers = iter(["typed password", "typed password"])
    assert main(["users", "add", "ana", "--role", "viewer"]) == 0
    assert authenticate(data_dir, "ana", "typed password") == "viewer"


def test_bad_input_is_one_line_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(monkeypatch, capsys, "users", "add", "Ana", "--role", "viewer", stdin="long enough\n")
    assert code == 2 and err.startswith("visual-anomaly: Invalid name:") and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "users", "add", "ana", "--role", "viewer", stdin="short\n")
    assert code == 2 and "Invalid password" in err


def test_bootstrap_shows_the_first_password_once_and_never_logs_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LOG_FORMAT", "json")  # every event logged at INFO on stderr
    code, out, err = run(monkeypatch, capsys, "users", "bootstrap", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["created"] and shown["name"] == "admin"
    password_file = data_dir / "initial-admin-password"
    assert password_file.read_text().strip() == shown["password"]
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert shown["password"] not in err and shown["password"] not in caplog.text
    assert authenticate(data_dir, "admin", shown["password"]) == "admin"
    code, out, _ = run(monkeypatch, capsys, "users", "bootstrap")
    assert code == 0 and "nothing to do" in out


def test_the_cli_acts_as_the_local_admin_unless_told_otherwise(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(monkeypatch, capsys, "status")
    assert code == 0 and out.splitlines()[0] == f"acting as {getpass.getuser()} (admin)"
    run(monkeypatch, capsys, "users", "add", "vic", "--role", "viewer", stdin="viewer password\n")
    status = json.loads(run(monkeypatch, capsys, "status", "--as-user", "vic", "--json")[1])
    assert status["acting_as"] == {"name": "vic", "role": "viewer"}
    image = tmp_path / "one.jpg"
    image.write_bytes(encode(photo(1)))
    code, _, err = run(monkeypatch, capsys, "ingest", str(image), "--as-user", "vic")
    assert (code, err.strip()) == (3, "visual-anomaly: User 'vic' (viewer) may not upload.")
    assert json.loads(run(monkeypatch, capsys, "status", "--json")[1])["images"] == 0
