"""The REST API and the pages behind their login (issue 14): every route, auth (session cookie,
Bearer tokens), the login rate limit, the Origin check, upload limits and each bad input, on real
photos through the real model."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import time
import urllib.request
import zlib

import cv2
import numpy as np
import pytest

from edgeface_cam import cli
from edgeface_cam.config import Config
from edgeface_cam.web import AuthStore, LiveHub, WebState, create_app, start_web
from edgeface_cam.web.security import SESSION_COOKIE

from .conftest import PEOPLE, SCENES

pytestmark = pytest.mark.device
pytest.importorskip("httpx2", reason="Starlette's TestClient needs it (the dev extra)")
fastapi_testclient = pytest.importorskip("fastapi.testclient")

PASSWORD = "correct horse battery"
OBAMA = sorted((PEOPLE / "obama").glob("*.jpg"))
BIDEN = sorted((PEOPLE / "biden").glob("*.jpg"))
CONTRACT = [  # issue 14: exact paths, tools depend on them
    ("GET", "/api/health"), ("POST", "/api/login"), ("POST", "/api/logout"),
    ("GET", "/api/people"), ("POST", "/api/people"), ("PATCH", "/api/people/{name}"),
    ("DELETE", "/api/people/{name}"), ("POST", "/api/people/{name}/faces"),
    ("POST", "/api/identify"), ("GET", "/api/sightings"), ("GET", "/api/sightings/{id}/crop.jpg"),
    ("POST", "/api/sightings/{id}/not"), ("POST", "/api/sightings/{id}/assign"),
    ("GET", "/api/unknowns"), ("POST", "/api/unknowns/{id}/assign"),
    ("POST", "/api/unknowns/{id}/ignore"), ("GET", "/api/status"),
    ("GET", "/api/cameras/{name}/stream.mjpg"), ("GET", "/api/cameras/{name}/snapshot.jpg"),
    ("GET", "/metrics"),
]
PAGES = ["/live", "/people", "/strangers", "/history", "/status", "/api/docs"]


def settings(tmp_path) -> Config:
    from edgeface_cam import config as configmod

    return configmod.replace(Config(), recognizer={"threads": 1},
                             gallery={"path": str(tmp_path / "gallery.db")})


def make_state(tmp_path, hub: LiveHub | None = None, password: str | None = PASSWORD):
    state = WebState(settings(tmp_path), hub=hub)
    if password:
        state.auth.set_password(password)
    return state


def client(state, base_url: str = "http://testserver"):
    return fastapi_testclient.TestClient(create_app(state), base_url=base_url)


def logged_in(state, base_url: str = "http://testserver"):
    c = client(state, base_url)
    r = c.post("/api/login", json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    return c


@pytest.fixture(scope="module")
def hub() -> LiveHub:
    """A hub fed with real frames, as the pipeline feeds it."""
    from types import SimpleNamespace

    hub = LiveHub(live_fps=5)
    image = cv2.imread(str(SCENES / "obama_biden_1.jpg"))
    track = SimpleNamespace(box=(10, 10, 50, 60), name="Barack Obama", score=0.8, id=1,
                            embeddings=1)
    hub.cameras = ["door"]
    hub.on_frame(SimpleNamespace(frame=SimpleNamespace(image=image, source="door"),
                                 tracks=[track]))
    return hub


@pytest.fixture(scope="module")
def api(tmp_path_factory, hub):
    """A logged-in client on a gallery with Obama enrolled through the API."""
    state = make_state(tmp_path_factory.mktemp("web"), hub=hub)
    c = logged_in(state)
    assert c.post("/api/people", json={"name": "Barack Obama"}).status_code == 201
    r = c.post("/api/people/Barack Obama/faces", files=photos(OBAMA[:2]))
    assert r.status_code == 201, r.text
    yield c, state
    state.close()


def photos(paths, field: str = "image"):
    return [(field, (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 64 + b"IEND\xaeB`\x82")


# --- the contract -------------------------------------------------------------------------------
def test_every_contract_route_exists_with_its_exact_path(api):
    c, _ = api
    schema = c.get("/api/openapi.json").json()
    have = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    missing = [r for r in CONTRACT if r not in have]
    assert not missing, missing


def test_health_needs_no_login(tmp_path):
    state = make_state(tmp_path)
    r = client(state).get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.json()["password_set"] is True


@pytest.mark.parametrize("method, path", [(m, p.replace("{name}", "x").replace("{id}", "1"))
                                          for m, p in CONTRACT
                                          if p not in ("/api/health", "/api/login")])
def test_every_other_route_needs_a_login(tmp_path, method, path):
    r = client(make_state(tmp_path)).request(method, path)
    assert r.status_code == 401, (path, r.text)
    assert "detail" in r.json() and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", PAGES)
def test_pages_send_a_stranger_to_the_login_page(tmp_path, path):
    r = client(make_state(tmp_path)).get(path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"


# --- login, sessions, tokens --------------------------------------------------------------------
def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(tmp_path):
    c = client(make_state(tmp_path))
    assert c.post("/api/login", json={"password": "wrong one"}).status_code == 401
    r = c.post("/api/login", json={"password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Secure" not in cookie  # plain HTTP here
    assert c.get("/api/people").status_code == 200
    assert c.post("/api/logout").status_code == 200
    assert c.get("/api/people").status_code == 401


def test_the_cookie_is_secure_under_tls(tmp_path):
    c = client(make_state(tmp_path), base_url="https://testserver")
    r = c.post("/api/login", json={"password": PASSWORD})
    assert r.status_code == 200 and "Secure" in r.headers["set-cookie"]


def test_a_new_password_ends_every_session(tmp_path):
    state = make_state(tmp_path)
    c = logged_in(state)
    AuthStore(tmp_path).set_password("another long one")  # `edgeface-cam passwd` meanwhile
    assert c.get("/api/people").status_code == 401


def test_ten_failed_logins_a_minute_then_429_even_for_the_right_password(tmp_path):
    state = make_state(tmp_path)
    c = client(state)
    for _ in range(10):
        assert c.post("/api/login", json={"password": "guess"}).status_code == 401
    r = c.post("/api/login", json={"password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "too many failed logins" in r.json()["detail"]
    assert state.limiter.retry_after("192.0.2.7") == 0  # another address may still try


def test_login_without_a_password_says_how_to_set_one(tmp_path):
    state = make_state(tmp_path, password=None)
    r = client(state).post("/api/login", json={"password": "anything"})
    assert r.status_code == 401 and "edgeface-cam passwd" in r.json()["detail"]
    page = client(state).get("/login")
    assert page.status_code == 200 and "edgeface-cam passwd" in page.text


def test_bearer_tokens_created_listed_and_revoked_by_the_cli(tmp_path, capsys):
    state = make_state(tmp_path)
    db = str(tmp_path / "gallery.db")
    assert cli.main(["token", "--name", "homeassistant", "--db", db]) == 0
    token = capsys.readouterr().out.strip()
    c = client(state)
    auth = {"Authorization": f"Bearer {token}"}
    assert c.get("/api/people", headers=auth).status_code == 200
    assert c.get("/api/people", headers={"Authorization": "Bearer efc_wrong"}).status_code \
        == 401
    assert token not in (tmp_path / "web-auth.json").read_text()  # stored hashed
    assert cli.main(["token", "--list", "--json", "--db", db]) == 0
    assert [t["name"] for t in json.loads(capsys.readouterr().out)] == ["homeassistant"]
    assert cli.main(["token", "--name", "homeassistant", "--db", db]) == 2  # exists
    assert "exists already" in capsys.readouterr().err
    assert cli.main(["token", "--revoke", "homeassistant", "--db", db]) == 0
    assert c.get("/api/people", headers=auth).status_code == 401


def test_passwd_reads_stdin_and_refuses_a_short_one(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "gallery.db")
    monkeypatch.setattr("sys.stdin", io.StringIO("tiny\n"))
    assert cli.main(["passwd", "--password-stdin", "--db", db]) == 2
    assert "too short" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a much longer secret\n"))
    assert cli.main(["passwd", "--password-stdin", "--db", db]) == 0
    stored = (tmp_path / "web-auth.json").read_text()
    assert "a much longer secret" not in stored and "scrypt$" in stored
    assert oct((tmp_path / "web-auth.json").stat().st_mode & 0o777) == "0o600"
    assert AuthStore(tmp_path).verify_password("a much longer secret")


# --- the Origin check and the headers -----------------------------------------------------------
def test_a_cookie_request_from_another_origin_is_refused(api):
    c, _ = api
    r = c.post("/api/people", json={"name": "Mallory"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
    r = c.post("/api/people", json={"name": "Mallory"},
               headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert all(p["name"] != "Mallory" for p in c.get("/api/people").json())
    r = c.post("/api/login", json={"password": PASSWORD}, headers={"Origin": "null"})
    assert r.status_code == 403  # login CSRF too
    # Our own pages' requests pass.
    r = c.post("/api/people", json={"name": "Same Origin"},
               headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 201
    assert c.delete("/api/people/Same Origin", headers={"Origin": "http://testserver"}) \
        .status_code == 200


def test_a_bearer_request_is_not_held_to_the_origin(tmp_path):
    state = make_state(tmp_path)
    token = state.auth.new_token("script")
    r = client(state).post("/api/people", json={"name": "Ada"},
                           headers={"Authorization": f"Bearer {token}",
                                    "Origin": "http://elsewhere.example"})
    assert r.status_code == 201


def test_security_headers_on_pages_api_errors_and_static_files(api):
    c, _ = api
    for path in ["/live", "/api/people", "/api/people/nobody-here", "/static/app.js"]:
        h = c.get(path).headers
        csp = h["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp
        assert h["x-content-type-options"] == "nosniff", path


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_without_inline_script(api, path):
    c, _ = api
    r = c.get(path)
    assert r.status_code == 200, r.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", r.text, flags=re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", r.text)  # no inline event handlers either


# --- people -------------------------------------------------------------------------------------
def test_people_add_list_rename_remove(api):
    c, _ = api
    r = c.post("/api/people", json={"name": "  Ada Lovelace "})
    assert r.status_code == 201 and r.json()["name"] == "Ada Lovelace"
    assert r.json()["faces"] == 0
    assert c.post("/api/people", json={"name": "ada lovelace"}).status_code == 409
    people = {p["name"]: p for p in c.get("/api/people").json()}
    assert people["Barack Obama"]["faces"] == 2 and "Ada Lovelace" in people
    r = c.patch("/api/people/ADA LOVELACE", json={"name": "Ada King"})
    assert r.status_code == 200 and r.json()["name"] == "Ada King"
    r = c.patch("/api/people/Ada King", json={"name": "barack obama"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = c.patch("/api/people/Ada Kong", json={"name": "X"})
    assert r.status_code == 404 and "did you mean 'Ada King'" in r.json()["detail"]
    assert c.delete("/api/people/Ada King").json() == {"removed": "Ada King"}
    assert c.delete("/api/people/Ada King").status_code == 404


def test_upload_photos_with_per_photo_results_and_the_same_person_check(api):
    c, _ = api
    r = c.post("/api/people/Barack Obama/faces", files=photos(OBAMA[1:4]))
    assert r.status_code == 201, r.text
    results = r.json()["results"]
    assert [x["file"] for x in results] == [p.name for p in OBAMA[1:4]]
    assert results[0]["skipped"] is True and r.json()["added"] == 2  # obama_2 was enrolled
    assert c.post("/api/people", json={"name": "Mixed"}).status_code == 201
    r = c.post("/api/people/Mixed/faces", files=photos([OBAMA[0], BIDEN[0]]))
    assert r.status_code == 422 and "same person" in r.json()["detail"]
    assert c.get("/api/people").json()[[p["name"] for p in c.get("/api/people").json()]
                                       .index("Mixed")]["faces"] == 0  # nothing written
    r = c.post("/api/people/Mixed/faces?force=true", files=photos([OBAMA[0], BIDEN[0]]))
    assert r.status_code == 201
    c.delete("/api/people/Mixed")


def test_a_photo_without_a_face_is_422_and_nothing_is_enrolled(api):
    c, _ = api
    wall = np.full((480, 640, 3), 128, np.uint8)
    files = [*photos(BIDEN[:1]), ("image", ("wall.jpg", jpeg(wall), "image/jpeg"))]
    assert c.post("/api/people", json={"name": "Joe Biden"}).status_code == 201
    r = c.post("/api/people/Joe Biden/faces", files=files)
    assert r.status_code == 422
    body = r.json()
    assert "wall.jpg: no face found" in body["detail"]
    assert [x["ok"] for x in body["results"]] == [True, False]
    assert next(p for p in c.get("/api/people").json() if p["name"] == "Joe Biden")["faces"] == 0


def test_faces_for_an_unknown_person_is_404(api):
    c, _ = api
    r = c.post("/api/people/Barak Obama/faces", files=photos(OBAMA[:1]))
    assert r.status_code == 404 and "did you mean 'Barack Obama'" in r.json()["detail"]


# --- bad input ----------------------------------------------------------------------------------
def test_malformed_json_and_missing_or_wrong_fields(api):
    c, _ = api
    r = c.post("/api/people", content=b'{"name": "Ada"', headers={"content-type":
                                                                  "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON")
    r = c.post("/api/people", json={})
    assert r.status_code == 422 and r.json()["detail"].startswith("name:")
    r = c.post("/api/people", json={"name": 42})
    assert r.status_code == 422 and "name" in r.json()["detail"]
    r = c.post("/api/people", json={"name": "a\u0007bell"})
    assert r.status_code == 400 and "control character" in r.json()["detail"]
    r = c.post("/api/people", json={"name": "x" * 65})
    assert r.status_code == 400 and "too long" in r.json()["detail"]
    assert isinstance(c.get("/api/nope").json()["detail"], str)


@pytest.mark.parametrize("data, status, words", [
    (b"just some text, not a picture\n" * 20, 422, "not an image"),
    (None, 422, "truncated"),  # a real JPEG cut in half
    (png_claiming(100_000, 100_000), 413, "megapixels"),
    (b"\xff\xd8" + b"\0" * (21 * 2 ** 20), 413, "at most 20 MB"),
    (b"", 422, "empty"),
])
def test_bad_images_are_refused_before_decoding(api, data, status, words):
    c, _ = api
    if data is None:
        whole = OBAMA[0].read_bytes()
        data = whole[: len(whole) // 2]
    for path in ("/api/identify", "/api/people/Barack Obama/faces"):
        r = c.post(path, files=[("image", ("x.jpg", data, "image/jpeg"))])
        assert r.status_code == status, (path, r.text[:200])
        assert words in r.json()["detail"], r.json()
    assert c.get("/api/health").status_code == 200  # still serving


def test_a_60_mb_body_is_413_and_a_truncated_multipart_body_400(api):
    c, _ = api
    r = c.post("/api/identify", content=b"\0" * (60 * 2 ** 20),
               headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and "MB" in r.json()["detail"]
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + OBAMA[0].read_bytes()[:5000])
    r = c.post("/api/identify", content=body,
               headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400 and "truncated" in r.json()["detail"]
    r = c.post("/api/identify", json={"image": "not a form"})
    assert r.status_code == 400 and "multipart" in r.json()["detail"]
    r = c.post("/api/identify", files=photos(OBAMA[:1], field="photo"))
    assert r.status_code == 422 and "no `image` field" in r.json()["detail"]
    r = c.post("/api/people", content=b'{"name": "' + b"x" * 100_000 + b'"}',
               headers={"content-type": "application/json"})
    assert r.status_code == 413


# --- identify, status, metrics, cameras ---------------------------------------------------------
def test_identify_names_the_enrolled_face_and_not_the_other(api):
    c, _ = api
    r = c.post("/api/identify", files=photos([SCENES / "obama_biden_1.jpg"]))
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) == 2
    assert sorted(f["name"] or "" for f in faces) == ["", "Barack Obama"]
    for f in faces:
        assert set(f) >= {"name", "score", "box", "quality"} and len(f["box"]) == 4
    assert c.post("/api/identify", files=photos(OBAMA[:2])).status_code == 422  # one at a time


def test_status_metrics_and_the_api_reference(api):
    c, _ = api
    s = c.get("/api/status").json()
    assert s["people"] >= 1 and -1 <= s["threshold"]["value"] <= 1
    assert {"cameras", "stages_ms", "cpu", "model", "events", "recent_events"} <= set(s)
    d = c.get("/api/status?doctor=true").json()["doctor"]
    assert any(check["name"] == "model" and check["status"].upper() == "OK" for check in d)
    m = c.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert re.search(r"^edgeface_people \d", m.text, flags=re.M)
    docs = c.get("/api/docs").text
    assert "/api/people/{name}/faces" in docs


def test_camera_snapshot_and_unknown_camera(api):
    c, _ = api
    r = c.get("/api/cameras/door/snapshot.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    annotated = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    raw = cv2.imdecode(np.frombuffer(c.get("/api/cameras/door/snapshot.jpg?annotated=false")
                                     .content, np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape == raw.shape
    assert float(np.abs(annotated.astype(int) - raw.astype(int)).mean()) > 0.1  # the boxes
    r = c.get("/api/cameras/garden/snapshot.jpg")
    assert r.status_code == 404 and "door" in r.json()["detail"]
    assert c.get("/api/cameras/garden/stream.mjpg").status_code == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_server_thread_streams_mjpeg_and_stops_cleanly(tmp_path, hub):
    port = _free_port()
    cfg = settings(tmp_path)
    AuthStore(tmp_path).set_password(PASSWORD)
    token = AuthStore(tmp_path).new_token("t")
    server = start_web(cfg, hub=hub, listen=f"127.0.0.1:{port}")
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/cameras/door/stream.mjpg",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
            head = r.read(4096)
            assert head.startswith(b"--frame\r\nContent-Type: image/jpeg")
            assert b"\xff\xd8" in head
            t0 = time.monotonic()
            server.stop()  # SIGTERM's path, with a browser still watching
            stopped_in = time.monotonic() - t0
    finally:
        server.stop()
    assert not server.thread.is_alive() and stopped_in < 5


def test_without_a_password_it_listens_on_loopback_only(tmp_path, caplog):
    port = _free_port()
    server = start_web(settings(tmp_path), listen=f"0.0.0.0:{port}")
    try:
        assert server.host == "127.0.0.1"
        assert "edgeface-cam passwd" in caplog.text
    finally:
        server.stop()


def test_a_pipeline_feeds_the_hub_without_encoding_while_nobody_watches(tmp_path):
    """The hook costs the frame loop a reference per frame: no JPEG until a stream asks."""
    from edgeface_cam.app import App
    from edgeface_cam.demo import DEMO_CLIP
    from edgeface_cam.sources import open_source

    hub = LiveHub()
    with App(settings(tmp_path)) as app:
        source = open_source(str(DEMO_CLIP))
        source.name = "door"
        pipeline = hub.attach(app.pipeline(source, None, [], max_frames=40))
        stats = pipeline.run()
        source.close()
    assert stats.frames == 40 and hub.latest_seq("door") == 39
    assert hub.encoded == 0
    assert hub.recent and hub.events_by_kind["unknown"] == len(hub.recent)
    assert hub.camera_names() == ["door"] and hub.in_view("door")
    assert hub.jpeg("door")[:2] == b"\xff\xd8" and hub.encoded == 1
    assert hub.jpeg("door") is not None and hub.encoded == 1  # the same frame: not again


def test_the_templates_and_static_files_ship_in_the_package():
    """setup.py's package_data globs cover every file the server reads."""
    from edgeface_cam.web.state import STATIC, TEMPLATES

    text = (TEMPLATES.parent.parent.parent / "setup.py").read_text()
    assert '"templates/*.html", "static/*"' in text
    for folder, pattern in ((TEMPLATES, "*.html"), (STATIC, "*")):
        files = [p for p in folder.iterdir() if p.is_file()]
        assert files and all(p.match(pattern) for p in files), folder


def test_several_cameras_each_have_their_picture(tmp_path):
    """The hub keeps the latest frame per camera (issue 15's several cameras in one pipeline)."""
    from edgeface_cam.app import App
    from edgeface_cam.demo import DEMO_CLIP
    from edgeface_cam.sources import open_source

    hub = LiveHub()
    with App(settings(tmp_path)) as app:
        sources = [open_source(str(DEMO_CLIP)), open_source(str(SCENES / "obama_biden_1.jpg"))]
        sources[0].name, sources[1].name = "door", "garden"
        cams = [app.camera_parts(s) for s in sources]
        hub.attach(app.pipeline(cams, None, [], max_frames=20)).run()
        for s in sources:
            s.close()
    assert sorted(hub.camera_names()) == ["door", "garden"]
    door = cv2.imdecode(np.frombuffer(hub.jpeg("door"), np.uint8), cv2.IMREAD_COLOR)
    garden = cv2.imdecode(np.frombuffer(hub.jpeg("garden"), np.uint8), cv2.IMREAD_COLOR)
    assert door.shape[:2] == (360, 640) and garden.shape != door.shape
    assert {t["name"] for t in hub.in_view("garden")} == {None}  # no gallery: unknown
    assert len(hub.in_view("garden")) == 2
