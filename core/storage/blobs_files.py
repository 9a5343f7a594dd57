"""Blobs as files under ``DATA_DIR/blobs``: the embedded default, no server needed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.storage.blobs import BlobStore


class FileBlobStore(BlobStore):
    """One file per key. Writes go to a temporary file in the same folder and are renamed into
    place, so a crash never leaves a partial blob under a real key."""

    name = "files"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"Blob key {key!r} must be a relative path without '..'.")
        return self.root / key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str, limit: int | None = None) -> bytes:
        try:
            with self._path(key).open("rb") as handle:
                return handle.read(-1 if limit is None else limit)
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def count(self, prefix: str) -> int:
        return len(self.keys(prefix))

    def keys(self, prefix: str) -> list[str]:
        folder, _, stem = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return []
        return [f"{folder}/{p.name}" if folder else p.name for p in base.iterdir()
                if p.is_file() and p.name.startswith(stem) and not p.name.startswith(".tmp-")]

    def describe(self) -> str:
        return f"files at {self.root}"
