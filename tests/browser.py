"""A real dashboard in a real browser: ``streamlit run`` on a free local port over a temporary
DATA_DIR, driven by Debian's Chromium through Playwright (never ``playwright install``: it
downloads a browser). Shared by the browser test and the dashboard benchmark."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def streamlit_server(data_dir: Path, log: Path, script: Path = ROOT / "app" / "Home.py", **env: str) -> Iterator[str]:
    """``streamlit run`` of the app (or of another ``script``) with random weights over ``data_dir``;
    yields its base URL."""
    port = free_port()
    environment = os.environ | {"DATA_DIR": str(data_dir), "MODEL_PRETRAINED": "none",
                                "PYTHONPATH": str(ROOT)} | env
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.address",
               "127.0.0.1", "--server.port", str(port), "--server.headless", "true"]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start; see {log}") from None
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine: stop it for good
            server.kill()
            server.wait()


def chromium_path() -> str:
    """Debian's Chromium; `.ci/run` installs it (apt-get install -y chromium) when missing."""
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("Chromium is not installed: apt-get install -y chromium")
    return path
