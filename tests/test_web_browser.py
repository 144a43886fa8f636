"""The web UI in a real browser (issue 14): Debian's chromium driven by Playwright, against the
server running beside a real pipeline on the demo clip (looped, paced like a camera).

Log in; the live picture changes; add a person by uploading photos; a stranger from the clip
appears as a group, is named, and the next event carries the name. Screenshots of every page go
to $EDGEFACE_SCREENSHOTS (default: the test's tmp folder)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edgeface_cam import config as configmod
from edgeface_cam.app import App
from edgeface_cam.config import Config
from edgeface_cam.demo import DEMO_CLIP
from edgeface_cam.sources import open_source
from edgeface_cam.web import AuthStore, LiveHub, start_web

from .conftest import PEOPLE

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "browser test password"
LIN = "Lin-Manuel Miranda"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium "
                                 "(apt-get install chromium; scripts/test.sh does)")]


class LiveSystem:
    """The demo clip looped at 15 fps through a real pipeline (empty gallery: everyone is a
    stranger), with the web server beside it, as `run` builds them."""

    def __init__(self, folder: Path) -> None:
        self.cfg = configmod.replace(Config(), recognizer={"threads": 1},
                                     gallery={"path": str(folder / "gallery.db")})
        AuthStore(folder).set_password(PASSWORD)
        self.hub = LiveHub(live_fps=5)
        self.app = App(self.cfg)
        self.events: list[dict] = []
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(120), "the pipeline did not start"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = start_web(self.cfg, hub=self.hub, listen=f"127.0.0.1:{port}")
        self.url = self.server.url

    def _run(self) -> None:
        source = open_source(str(DEMO_CLIP), fps=15.0, loop=True)
        source.name = "door"
        gallery = self.app.matching_gallery(create=True)
        sink = _ListSink(self.events)
        self.pipeline = self.hub.attach(self.app.pipeline(source, gallery, [sink]))
        self.started.set()
        try:
            self.pipeline.run()
        finally:
            source.close()

    def close(self) -> None:
        self.pipeline.stop()
        self.thread.join(timeout=20)
        self.server.stop()
        self.app.close()


class _ListSink:
    def __init__(self, out: list[dict]) -> None:
        self.out = out

    def emit(self, event: dict) -> None:
        self.out.append(event)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    s = LiveSystem(tmp_path_factory.mktemp("live"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("EDGEFACE_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser_page(system):
    profile = tempfile.mkdtemp(prefix="edgeface-chromium-")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        yield page
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


def test_log_in(system, browser_page, shots):
    page = browser_page
    page.goto(f"{system.url}/people")
    assert page.url.endswith("/login")  # a stranger is sent to the login page
    page.screenshot(path=str(shots / "login.png"))
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    page.wait_for_selector("#msg:not([hidden])")
    assert "wrong password" in page.inner_text("#msg")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{system.url}/live")


def test_the_live_picture_changes(system, browser_page, shots):
    page = browser_page
    page.goto(f"{system.url}/live")
    img = page.locator("img.live")
    page.wait_for_function("document.querySelector('img.live').naturalWidth > 0")
    first = img.screenshot()
    time.sleep(1.5)
    second = img.screenshot()
    assert first != second, "the live picture did not change in 1.5 s"
    page.wait_for_selector(".in-view li:not(.dim)")  # someone in view, from /api/status
    page.screenshot(path=str(shots / "live.png"))


def test_upload_photos_to_add_a_person(system, browser_page, shots):
    page = browser_page
    page.goto(f"{system.url}/people")
    page.fill("#add-person input[name=name]", "Barack Obama")
    page.click("#add-person button[type=submit]")
    card = page.locator('.person[data-name="Barack Obama"]')
    card.wait_for()
    photos = sorted((PEOPLE / "obama").glob("*.jpg"))[:3]
    card.locator("input[type=file]").set_input_files([str(p) for p in photos])
    card.locator("form.upload button[type=submit]").click()
    page.wait_for_selector(".results li.good")
    results = card.locator(".results li").all_inner_texts()
    assert len(results) == 3 and all("face added" in r for r in results), results
    page.wait_for_selector('.person[data-name="Barack Obama"] .thumbs img')  # after reload
    assert "3 faces" in page.locator('.person[data-name="Barack Obama"] h2').inner_text()
    page.screenshot(path=str(shots / "people.png"))


def test_name_a_stranger_and_the_next_event_carries_the_name(system, browser_page, shots):
    page = browser_page
    page.goto(f"{system.url}/strangers")
    deadline = time.monotonic() + 60
    while not page.locator(".group").count() and time.monotonic() < deadline:
        time.sleep(2)
        page.reload()
    group = page.locator(".group").first
    group.wait_for()
    page.screenshot(path=str(shots / "strangers.png"))
    named_at = len(system.events)
    group.locator("input[name=name]").fill(LIN)
    group.locator("form.assign button[type=submit]").click()
    page.wait_for_selector("#msg:not([hidden])")
    assert f"named {LIN}" in page.inner_text("#msg")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(
            e.get("name") == LIN for e in system.events[named_at:]):
        time.sleep(1)
    assert any(e.get("name") == LIN for e in system.events[named_at:]), system.events[-5:]
    page.goto(f"{system.url}/live")
    page.wait_for_selector(f"#events li:has-text('{LIN}')")
    page.goto(f"{system.url}/history")
    page.wait_for_selector(f"table.sightings td:has-text('{LIN}')")
    page.screenshot(path=str(shots / "history.png"))


def test_open_a_group_and_untick_a_face_before_naming_it(system, browser_page):
    """Only the ticked faces are named; the unticked one stays a stranger."""
    from edgeface_cam.gallery import Library

    page = browser_page
    page.goto(f"{system.url}/strangers")
    groups = page.locator(".group")
    pick = next((groups.nth(i) for i in range(groups.count())
                 if groups.nth(i).locator("input[name=sighting]").count() >= 2), None)
    if pick is None:
        pytest.skip("no group of two or more faces to untick")
    pick.locator("summary").click()
    boxes = pick.locator("input[name=sighting]")
    kept = [boxes.nth(i).get_attribute("value") for i in range(boxes.count() - 1)]
    left = boxes.nth(boxes.count() - 1).get_attribute("value")
    boxes.nth(boxes.count() - 1).uncheck()
    pick.locator("input[name=name]").fill("Second Guest")
    pick.locator("form.assign button[type=submit]").click()
    page.wait_for_selector("#msg:not([hidden])")
    assert "named Second Guest" in page.inner_text("#msg")
    page.wait_for_timeout(1500)  # the page reloads itself after naming
    page.wait_for_load_state()
    lib = Library(system.app.gallery())
    assert lib.require_sighting(int(left))["name"] is None
    assert all(lib.require_sighting(int(k))["name"] == "Second Guest" for k in kept)


def test_status_page_and_a_phone_sized_screen(system, browser_page, shots):
    page = browser_page
    page.goto(f"{system.url}/status")
    page.wait_for_selector("text=Stage timings")
    assert "door" in page.inner_text("main")
    page.screenshot(path=str(shots / "status.png"), full_page=True)
    for name in ("history", "strangers"):
        page.goto(f"{system.url}/{name}")
        if not (shots / f"{name}.png").exists():
            page.screenshot(path=str(shots / f"{name}.png"))
    page.goto(f"{system.url}/api/docs")
    page.screenshot(path=str(shots / "api.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{system.url}/live")
    page.wait_for_function("document.querySelector('img.live').naturalWidth > 0")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page is {width} px wide on a 390 px phone"
    page.screenshot(path=str(shots / "live-phone.png"))
    page.set_viewport_size({"width": 1280, "height": 900})
