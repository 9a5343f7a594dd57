"""How fast the dashboard answers, measured on synthetic collections (no images to embed).

A collection of ``n`` images is written straight into the stores (catalog rows, synthetic vectors
from ``benchmarks.dataset_vectors``, one small thumbnail and original per image) with Redis as the
cache, so a server started later finds the analysis already computed for that version. Then:

- server time of a threshold move and of a keep / remove decision on Duplicates, and of a method /
  threshold change on Anomalies (AppTest reruns and compiles the whole script, so these are upper
  bounds for the fragment reruns);
- each page's first render in a new session once the version's analysis is cached;
- the map's time to visible in Chromium: from navigation until the scattergl canvas has drawn;
- the map widget alone over synthetic points at sizes no collection here can be analysed at (the
  facade bench times `Collection.projection()` itself): what the server and the browser pay.

    python -m benchmarks.dashboard                  # 10,000 and 100,000 images, the map alone at 1,000,000
    python -m benchmarks.dashboard --sizes 10000 --map-only
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from benchmarks.dataset_vectors import synthetic_collection
from benchmarks.synthetic_store import write_synthetic
from core import MapView
from core.collection import Collection
from core.settings import Settings
from core.synthetic import encode, photo
from tests.browser import CHROMIUM_FLAGS, chromium_path, streamlit_server

APP = Path(__file__).resolve().parents[1] / "app"
REDIS_URL = "redis://127.0.0.1:6379/0"
AUTH_SECRET = "benchmark-only-secret"  # a server backend (Redis here) requires one
PAGES = {"Home": "Home.py", "Upload": "pages/1_Upload.py", "Search": "pages/2_Search.py",
         "Duplicates": "pages/3_Duplicates.py", "Anomalies": "pages/4_Anomalies.py"}


def build(n: int, data_dir: Path) -> Settings:
    """Write ``n`` synthetic images into fresh stores; returns the settings that open them."""
    settings = Settings(data_dir=data_dir, model_pretrained="none", redis_url=REDIS_URL)
    with Collection.open(settings) as collection:
        write_synthetic(collection, synthetic_collection(n), data_dir, picture=encode(photo(0, size=(96, 72))))
    return settings


def timed_run(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    if at.exception or at.error:
        failure = at.exception[0].message if at.exception else at.error[0].value
        raise RuntimeError(f"the page failed: {failure}")
    return seconds


def page(name: str) -> AppTest:
    """A page in a session where the first admin has signed in."""
    at = AppTest.from_file(str(APP / PAGES[name]), default_timeout=900)
    at.session_state["authentication_status"] = True
    at.session_state["username"] = at.session_state["name"] = "admin"
    return at


def median_ms(samples: list[float]) -> str:
    return f"{np.median(samples) * 1000:.0f} ms"


def server_times(n: int) -> list[list[str]]:
    """Cold compute, first renders from the cached version, and the reruns a control causes."""
    rows = []
    cold = {name: timed_run(page(name)) for name in ("Home", "Duplicates", "Anomalies")}
    rows.append([n, "first render, analysis not yet computed (Home, Duplicates, Anomalies)",
                 " / ".join(f"{s:.1f} s" for s in cold.values())])
    for name in PAGES:
        rows.append([n, f"{name}: first render of a new session (version cached)",
                     f"{timed_run(page(name)) * 1000:.0f} ms"])
    duplicates = page("Duplicates")
    timed_run(duplicates)
    moves = []
    for value in (0.9, 0.97, 0.93, 0.99, 0.95):
        duplicates.slider(key="dup-similarity").set_value(value)
        moves.append(timed_run(duplicates))
    rows.append([n, "Duplicates: similarity slider moved (median of 5)", median_ms(moves)])
    switches = [g.key for g in duplicates.button_group if g.key.startswith("dup-decision-")][:3]
    decided = []
    for key, value in zip(switches, ("remove", "keep", "remove"), strict=False):
        duplicates.button_group(key=key).set_value(value)
        decided.append(timed_run(duplicates))
    rows.append([n, "Duplicates: a keep / remove switch clicked (median of 3)", median_ms(decided)])
    anomalies = page("Anomalies")
    timed_run(anomalies)
    changes = []
    for method in ("knn", "lof", "combined") * 2:  # the first round computes each method's scores once
        anomalies.selectbox(key="anom-method").set_value(method)
        changes.append(timed_run(anomalies))
    rows.append([n, "Anomalies: method changed, scores cached (median of 3)", median_ms(changes[3:])])
    rows.append([n, "Anomalies: method changed, its scores computed then (median of 3)", median_ms(changes[:3])])
    tops = []
    for top in (50, 100, 20):
        anomalies.number_input(key="anom-top").set_value(top)
        tops.append(timed_run(anomalies))
    rows.append([n, "Anomalies: top N changed (median of 3)", median_ms(tops)])
    return rows


def map_time_to_visible(data_dir: Path, log: Path) -> float:
    """Seconds from navigation to the map's WebGL canvas drawn, in Chromium, analysis cached."""
    from playwright.sync_api import sync_playwright

    with streamlit_server(data_dir, log, REDIS_URL=REDIS_URL, AUTH_SECRET=AUTH_SECRET) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.goto(base)
        tab.get_by_role("textbox", name="Username").fill("admin")
        tab.get_by_role("textbox", name="Password").fill((data_dir / "initial-admin-password").read_text().strip())
        tab.get_by_role("button", name="Sign in").click()
        seconds = _time_to_drawn_map(tab, base)
        browser.close()
    return seconds


def _time_to_drawn_map(tab: object, base: str) -> float:
    """Wait for a first drawing (it warms the server's caches), then time a new one from navigation."""
    canvas = tab.locator(".js-plotly-plot .gl-container canvas").first
    canvas.wait_for(timeout=900_000)
    start = time.perf_counter()
    tab.goto(base)
    canvas.wait_for(timeout=900_000)
    tab.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=900_000)
    return time.perf_counter() - start


MAP_ONLY_PAGE = """
import sys
sys.path[:0] = [{root!r}, {app!r}]
from benchmarks.dashboard import MapOnly
from widgets.map import render_map
render_map(MapOnly.of({n}), key="map")
"""


class MapOnly:
    """What the map widget asks of a collection, for ``n`` synthetic points (clusters of a UMAP-like
    layout): the browser's side of a map at sizes no collection here can be analysed at."""

    def __init__(self, view: MapView) -> None:
        self.view = view

    @classmethod
    def of(cls, n: int) -> MapOnly:
        rng = np.random.default_rng(0)
        centres = rng.normal(0, 8, (max(1, n // 5000), 2))
        xy = (centres[rng.integers(0, len(centres), n)] + rng.normal(0, 1, (n, 2))).astype(np.float32)
        ids = tuple(f"00000000-0000-0000-0000-{i:012d}" for i in range(n))
        return cls(MapView(image_id=ids, file_name=tuple(f"synthetic_{i:07d}.jpg" for i in range(n)),
                           source=tuple(("camera-a", "camera-b", "scanner")[i % 3] for i in range(n)),
                           x=xy[:, 0], y=xy[:, 1], anomaly_score=rng.random(n, dtype=np.float32),
                           anomaly_percentile=rng.random(n, dtype=np.float32) * 100, label=(None,) * n,
                           cluster_id=np.zeros(n, dtype=np.int32), fitted=min(n, 20_000)))

    def projection(self) -> MapView:
        return self.view

    def version(self) -> int:
        return 1

    def labels(self) -> dict[str, str]:
        return {}

    def decisions(self) -> dict:
        return {}


def map_only_time_to_visible(n: int, workdir: Path) -> tuple[float, float]:
    """The map widget alone over ``n`` synthetic points: server seconds to the figure, and seconds
    from navigation to the drawn map in Chromium (points cached, as for every render after a version's first)."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(APP))
    from widgets.map import map_figure, map_points

    collection = MapOnly.of(n)
    start = time.perf_counter()
    drawn, everything = map_points(collection)
    map_figure(drawn, "score", everything).to_json()
    server = time.perf_counter() - start
    script = workdir / f"map_only_{n}.py"
    script.write_text(MAP_ONLY_PAGE.format(root=str(APP.parent), app=str(APP), n=n))
    with streamlit_server(workdir, workdir / f"map-only-{n}.log", script=script) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.goto(base)
        seconds = _time_to_drawn_map(tab, base)
        browser.close()
    return server, seconds


def table(headers: list[str], rows: list[list[object]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [" | ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in [headers, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--map-only", type=int, nargs="*", default=[1_000_000],
                        help="sizes at which to time the map widget alone, over synthetic points")
    args = parser.parse_args()
    sys.path.insert(0, str(APP))
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as workdir:
        for n in args.sizes:
            data_dir = Path(workdir) / f"n{n}"
            start = time.perf_counter()
            build(n, data_dir)
            print(f"{n} images written in {time.perf_counter() - start:.0f} s", flush=True)
            os.environ.update(DATA_DIR=str(data_dir), MODEL_PRETRAINED="none", REDIS_URL=REDIS_URL,
                              AUTH_SECRET=AUTH_SECRET)
            import streamlit as st

            st.cache_resource.clear()
            rows += server_times(n)
            st.cache_resource.clear()
            rows.append([n, "Map: time to visible in Chromium (version cached)",
                         f"{map_time_to_visible(data_dir, Path(workdir) / f'streamlit-{n}.log'):.1f} s"])
            print(table(["images", "what", "time"], rows), flush=True)
        for n in args.map_only:
            server, browser = map_only_time_to_visible(n, Path(workdir))
            rows.append([n, "Map widget alone, synthetic points: server time to the figure", f"{server:.1f} s"])
            rows.append([n, "Map widget alone, synthetic points: time to visible in Chromium", f"{browser:.1f} s"])
            print(table(["images", "what", "time"], rows), flush=True)


if __name__ == "__main__":
    main()
