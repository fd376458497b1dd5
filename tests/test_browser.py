"""The app in a real browser: `streamlit run` on a free port, Debian's Chromium driven by Playwright.

Uploads a query through the page's file input, waits for the neighbour cards, checks their number
and that each shows a distance, visits the other pages through the sidebar's navigation, and saves
screenshots under test-artifacts/ (git-ignored). The server starts in another working directory:
the pages (app_pages/) are found beside streamlit_app.py. Every wait is bounded; the server is
stopped in a finally.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import fake_runs
from local_processes import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "streamlit_app.py"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SERVER_START_S = 40
WAIT_MS = 30_000
K = 10


def wait_for_health(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def require_chromium() -> None:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.fail(f"Chromium is missing ({CHROMIUM}): `make test` installs it as root (apt-get install chromium); "
                    "install it that way to run the browser test")


@contextlib.contextmanager
def app_in_chromium(run: Path, tmp_path: Path):
    """The app for ``run`` served by `streamlit run` in another working directory, and a Chromium page
    on it; the server is stopped and the browser closed however the test ends."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    port = free_port()
    log = tmp_path / "streamlit.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    env.pop("RETRIEVAL_RUN_DIR", None)
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
               "--client.toolbarMode", "minimal", "--", str(run)]
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_for_health(port, server, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_MS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.set_default_timeout(WAIT_MS)
                page.goto(f"http://127.0.0.1:{port}/", timeout=WAIT_MS)
                yield page
            finally:
                browser.close()
    finally:
        stop(server)


def test_upload_in_chromium_shows_neighbours_with_distances(tmp_path):
    require_chromium()
    from playwright.sync_api import expect

    gallery = fake_runs.make_gallery(tmp_path / "gallery")
    run = fake_runs.make_run(tmp_path / "run", gallery)
    query = tmp_path / "query.png"
    query.write_bytes(fake_runs.png_bytes((0, 230, 40), size=48))
    ARTIFACTS.mkdir(exist_ok=True)
    with app_in_chromium(run, tmp_path) as page:
        file_input = page.locator("input[type=file]")
        file_input.wait_for(state="attached", timeout=WAIT_MS)
        # the upload limit of the checkout's .streamlit/config.toml, though the server runs in another folder
        expect(page.get_by_test_id("stFileUploaderDropzoneInstructions")).to_contain_text("50MB per file")
        file_input.set_input_files(str(query))

        cards = page.locator("[class*='st-key-neighbour-']")
        page.locator(f".st-key-neighbour-{K}").wait_for(timeout=WAIT_MS)
        assert cards.count() == K
        for i in range(K):
            # a card's container is attached before its text renders: wait for the text (retrying)
            expect(cards.nth(i)).to_contain_text("cos = ", timeout=WAIT_MS)
            text = cards.nth(i).inner_text()
            assert f"{i + 1}. " in text and "d = " in text and "cos = " in text, text
        page.get_by_role("heading", name="Margin picture", exact=True).wait_for(timeout=WAIT_MS)
        page.locator(".vega-embed").first.wait_for(timeout=WAIT_MS)
        assert not page.locator("[data-testid='stException']").count()
        page.wait_for_timeout(800)  # let the images and the chart paint
        page.screenshot(path=str(ARTIFACTS / "app_search.png"), full_page=True)

        for name, marker in (("Hardest negatives", ".st-key-triplet-1"),
                             ("Embedding map", ".vega-embed"),
                             ("Training", ".vega-embed")):
            # the sidebar's navigation (st.navigation over app_pages/), one link per page title
            page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=name, exact=True).click()
            page.get_by_role("heading", name=name, exact=True).wait_for(timeout=WAIT_MS)
            page.locator(marker).first.wait_for(timeout=WAIT_MS)
            assert not page.locator("[data-testid='stException']").count(), name
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / f"app_{name.lower().replace(' ', '_')}.png"), full_page=True)


def test_a_two_person_photo_in_chromium_gives_a_result_row_each_face(tmp_path):
    require_chromium()
    sys.path.insert(0, str(Path(__file__).resolve().parent / "faces"))
    from faces_helpers import SCENES, dataset, make_face_folder, make_face_run
    from playwright.sync_api import expect

    from retrieval.index import build_index

    photo = dataset(SCENES / "pairs" / "000.jpg")  # two people (pairs.csv gives their rectangles)
    run = make_face_run(tmp_path)
    gallery = make_face_folder(tmp_path / "gallery", n_classes=2, per_class=2, no_face=0)
    (gallery / "party").mkdir()
    shutil.copy(photo, gallery / "party" / "two.jpg")
    build_index(run, gallery, device="cpu", n_trees=2)
    ARTIFACTS.mkdir(exist_ok=True)
    with app_in_chromium(run, tmp_path) as page:
        file_input = page.locator("input[type=file]")
        file_input.wait_for(state="attached", timeout=WAIT_MS)
        file_input.set_input_files(str(photo))
        rows = page.locator("[class*='st-key-face-row-']")
        page.locator(".st-key-face-row-2").wait_for(timeout=WAIT_MS)
        assert rows.count() == 2, "one result row a face"
        for number in (1, 2):
            row = page.locator(f".st-key-face-row-{number}")
            expect(row).to_contain_text(f"face {number}, aligned", timeout=WAIT_MS)
            expect(row).to_contain_text("d = ", timeout=WAIT_MS)
        expect(page.get_by_text("2 face(s) found")).to_be_visible(timeout=WAIT_MS)
        assert not page.locator("[data-testid='stException']").count()
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "app_faces.png"), full_page=True)
        page.get_by_text("Look harder for faces").click()  # the switch: the same photo looked at harder
        expect(page.get_by_text("2 face(s) found, looking harder")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator(".st-key-face-row-2")).to_contain_text("d = ", timeout=WAIT_MS)
        assert not page.locator("[data-testid='stException']").count()
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "app_faces_harder.png"), full_page=True)
