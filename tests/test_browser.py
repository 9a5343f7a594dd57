"""The dashboard in a real browser (Chromium through Playwright), as an analyst uses it: upload
through the drop zone, find the images in Search, box-select on the map and export exactly the
selection, label an anomaly, mark a duplicate as removed and see it leave the clusters, download
both CSVs, and a screenshot of every page at two sizes (under tests/artifacts/, git-ignored) for
a person to look at."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from core.synthetic import encode, photo
from tests.browser import CHROMIUM_FLAGS, ROOT, chromium_path, streamlit_server

ARTIFACTS = ROOT / "tests" / "artifacts"
PAGES = {"home": "", "upload": "Upload", "search": "Search", "duplicates": "Duplicates", "anomalies": "Anomalies"}
VIEWPORTS = ((1400, 1000), (1024, 768))
WAIT_MS = 240_000  # generous: on a loaded shared machine the first ingest (the model loads) takes minutes
PHOTOS = 14
LOGIN_COOKIE = "visual_anomaly_login"  # app/shared.py's COOKIE_NAME


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("browser")
    with streamlit_server(folder / "data", folder / "streamlit.log") as base:
        yield base, folder / "data"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=WAIT_MS)  # every expectation, not only those that name a timeout
    with sync_playwright() as playwright:
        opened = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield opened
        opened.close()


def open_page(page: Page, base: str, name: str) -> None:
    page.goto(f"{base}/{PAGES[name]}")
    expect(page.get_by_test_id("stApp")).to_be_visible(timeout=WAIT_MS)
    wait_idle(page)


def wait_idle(page: Page) -> None:
    """Until the script run the last action started has finished (no 'Running…' widget)."""
    for _ in range(2):
        page.wait_for_timeout(300)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=WAIT_MS)
        expect(page.get_by_test_id("stSpinner")).to_have_count(0, timeout=WAIT_MS)


def download_csv(page: Page, button: str) -> list[dict[str, str]]:
    with page.expect_download(timeout=WAIT_MS) as download:
        page.get_by_role("button", name=button).click()
    return list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))


def box_select_everything(page: Page) -> None:
    chart = page.locator(".js-plotly-plot").first
    chart.hover()
    chart.locator('[data-title="Box Select"]').click()
    box = chart.locator(".nsewdrag").first.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=5)
    page.mouse.up()


def sign_in(page: Page, base: str, data_dir: Path) -> None:
    """Sign in as the first admin, whose password the first run wrote under DATA_DIR."""
    open_page(page, base, "home")
    page.get_by_role("textbox", name="Username").fill("admin")
    page.get_by_role("textbox", name="Password").fill((data_dir / "initial-admin-password").read_text().strip())
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Signed in as")).to_be_visible(timeout=WAIT_MS)
    # The login cookie is written by a component after the page shows: on a loaded machine, going
    # to another page before it is there signs the next page out.
    page.wait_for_function(f"() => document.cookie.includes('{LOGIN_COOKIE}=')", timeout=WAIT_MS)


@pytest.mark.timeout(3 * 600)  # the whole round trip, on a shared machine that may be loaded
def test_analyst_round_trip_in_chromium(server: tuple[str, Path], browser: Browser, tmp_path: Path) -> None:
    server, data_dir = server
    page = browser.new_page(viewport={"width": VIEWPORTS[0][0], "height": VIEWPORTS[0][1]}, accept_downloads=True)
    open_page(page, server, "home")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot(page, "login")
    sign_in(page, server, data_dir)
    expect(page.get_by_text("The collection is empty")).to_be_visible()

    photos = []
    for seed in range(PHOTOS):
        path = tmp_path / f"photo_{seed:02d}.jpg"
        path.write_bytes(encode(photo(seed)))
        photos.append(path)
    copy = tmp_path / "copy_of_photo_03.png"  # the same pixels as photo_03.jpg, other bytes
    copy.write_bytes(encode(Image.open(photos[3]), "PNG"))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    open_page(page, server, "upload")
    expect(page.get_by_text("Up to 10 MB per file")).to_be_visible()
    drop_zone = page.get_by_test_id("stFileUploader").locator('input[type="file"]')
    for batch, ingested in ((photos, PHOTOS), ([copy, notes], 1)):
        drop_zone.set_input_files(batch)
        expect(page.get_by_text(batch[-1].name).first).to_be_visible(timeout=WAIT_MS)
        page.get_by_role("button", name="Ingest").click()
        expect(page.get_by_text("Done")).to_be_visible(timeout=WAIT_MS)
        wait_idle(page)
        expect(page.get_by_test_id("stMetricValue").first).to_have_text(str(ingested), timeout=WAIT_MS)
    expect(page.get_by_text("exact duplicate of photo_03.jpg")).to_be_visible()
    expect(page.get_by_text("rejected: The file's contents are not an image", exact=False)).to_be_visible()
    screenshot(page, "upload-results")

    open_page(page, server, "search")
    page.get_by_label("Describe the images").fill("a colourful photo")
    page.get_by_label("Describe the images").press("Enter")
    expect(page.get_by_text("images for text: a colourful photo")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("photo_0", exact=False).first).to_be_visible()
    screenshot(page, "search-results")

    open_page(page, server, "home")
    box_select_everything(page)
    expect(page.get_by_text(f"Selection: {PHOTOS + 1} images")).to_be_visible(timeout=WAIT_MS)
    wait_idle(page)
    screenshot(page, "home-selection")
    selection = download_csv(page, f"Export selection as CSV ({PHOTOS + 1} rows)")
    assert {row["file_name"] for row in selection} >= {f"photo_{seed:02d}.jpg" for seed in range(PHOTOS)}
    assert all("?image=" in row["link"] for row in selection)

    open_page(page, server, "anomalies")
    page.get_by_test_id("stButtonGroup").locator("button", has_text="anomaly").first.click()
    wait_idle(page)
    expect(page.get_by_text("pct · anomaly")).to_have_count(1)
    screenshot(page, "anomalies-labelled")
    anomalies = download_csv(page, "Export selection as CSV")
    assert [row["label"] for row in anomalies].count("anomaly") == 1
    assert [int(row["rank"]) for row in anomalies] == sorted(int(row["rank"]) for row in anomalies)

    open_page(page, server, "duplicates")
    clusters = download_csv(page, "Export clusters as CSV")
    assert {"photo_03.jpg", "copy_of_photo_03.png"} <= {row["file_name"] for row in clusters}
    copy_tile = page.get_by_test_id("stColumn").filter(has_text="copy_of_photo_03.png")
    copy_tile.get_by_role("radio", name="✗ remove").click()  # a segmented control: a radio group
    expect(page.get_by_role("button", name="Undo: remove copy_of_photo_03.png")).to_be_visible(timeout=WAIT_MS)
    wait_idle(page)
    screenshot(page, "duplicates-decided")
    marked = download_csv(page, "Export clusters as CSV")
    assert [row["decision"] for row in marked if row["file_name"] == "copy_of_photo_03.png"] == ["remove"]
    page.get_by_role("button", name="Remove the images marked remove (1)").click()
    expect(page.get_by_text("copy_of_photo_03.png")).to_have_count(0, timeout=WAIT_MS)  # its undo goes too
    expect(page.get_by_role("button", name="Export clusters as CSV (0 rows)")).to_be_visible()
    wait_idle(page)

    for width, height in VIEWPORTS:
        page.set_viewport_size({"width": width, "height": height})
        for name in PAGES:
            open_page(page, server, name)
            page.wait_for_timeout(500)  # charts draw after the script run
            assert page.get_by_test_id("stException").count() == 0, name
            screenshot(page, name)


def screenshot(page: Page, name: str) -> None:
    """What the window shows, and the whole page (Streamlit scrolls inside its main area, so the
    window is stretched to the content's height for that one)."""
    wait_idle(page)
    size = page.viewport_size
    assert size is not None
    page.screenshot(path=str(ARTIFACTS / f"{name}-{size['width']}x{size['height']}.png"))
    content = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], int(content))})
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / f"{name}-{size['width']}x{size['height']}-full.png"))
    page.set_viewport_size(size)
