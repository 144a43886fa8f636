"""The face library over REST (issue 14 on issue 13's library): sightings paged and filtered,
crops, groups of unknown faces, "this is X", "not X", ignore, and each bad input; on sightings a
real pipeline stored from the demo clip with nobody enrolled (everyone a stranger)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import cv2
import numpy as np
import pytest

from edgeface_cam.app import App
from edgeface_cam.demo import DEMO_CLIP, DEMO_PERSON
from edgeface_cam.sources import open_source

from .test_web_api import logged_in, make_state

pytestmark = pytest.mark.device
SIGHTING_FIELDS = {"id", "time", "source", "frame", "file", "track_id", "name", "score",
                   "quality", "cluster"}
GROUP_FIELDS = {"id", "size", "first_seen", "last_seen", "ignored", "sightings"}


@pytest.fixture(scope="module")
def lib_api(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    state = make_state(folder)
    with App(state.cfg) as app:  # the pipeline `run` builds, with its sightings recorder
        source = open_source(str(DEMO_CLIP))
        source.name = "door"
        app.pipeline(source, app.matching_gallery(create=True), []).run()
        source.close()
    c = logged_in(state)
    yield c, state
    state.close()


def test_sightings_are_the_cli_objects_newest_first_and_paged(lib_api):
    c, _ = lib_api
    r = c.get("/api/sightings?limit=500")
    assert r.status_code == 200
    every = r.json()
    assert len(every) >= 4 and "x-next-cursor" not in r.headers
    assert all(set(s) == SIGHTING_FIELDS for s in every)
    assert all(s["name"] is None and s["source"] == "door" for s in every)
    assert [s["time"] for s in every] == sorted((s["time"] for s in every), reverse=True)
    seen, cursor = [], None
    while True:
        r = c.get("/api/sightings?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        seen += [s["id"] for s in r.json()]
        cursor = r.headers.get("x-next-cursor")
        if cursor is None:
            break
        assert 'rel="next"' in r.headers["link"] and f"cursor={cursor}" in r.headers["link"]
    assert sorted(seen) == sorted(s["id"] for s in every) and len(set(seen)) == len(seen)


def test_sighting_filters(lib_api):
    c, _ = lib_api
    total = len(c.get("/api/sightings?limit=500").json())
    today = datetime.now(timezone.utc).date().isoformat()
    assert len(c.get(f"/api/sightings?limit=500&day={today}").json()) == total
    assert c.get("/api/sightings?day=2001-01-01").json() == []
    assert len(c.get("/api/sightings?limit=500&camera=door").json()) == total
    assert c.get("/api/sightings?camera=garden").json() == []
    assert len(c.get("/api/sightings?limit=500&unknown=true&since=1h").json()) == total
    assert c.get("/api/sightings?since=2999-01-01").json() == []


@pytest.mark.parametrize("query, status, words", [
    ("day=yesterday", 422, "not a date"),
    ("limit=0", 422, "limit"),
    ("limit=501", 422, "limit"),
    ("cursor=0", 422, "cursor"),
    ("limit=ten", 422, "limit"),
    ("name=Nobody%20Here", 404, "no person named 'Nobody Here'"),
    ("name=x&unknown=true", 422, "not both"),
    ("since=last%20tuesday", 422, "since:"),
])
def test_bad_sighting_queries(lib_api, query, status, words):
    c, _ = lib_api
    r = c.get(f"/api/sightings?{query}")
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_crops_are_the_stored_face(lib_api):
    c, _ = lib_api
    sid = c.get("/api/sightings?limit=1").json()[0]["id"]
    r = c.get(f"/api/sightings/{sid}/crop.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    crop = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (112, 112, 3)
    r = c.get("/api/sightings/999999/crop.jpg")
    assert r.status_code == 404 and "no sighting 999999" in r.json()["detail"]
    assert c.get("/api/sightings/abc/crop.jpg").status_code == 422


def test_unknowns_largest_first_and_paged(lib_api):
    c, _ = lib_api
    groups = c.get("/api/unknowns").json()
    assert groups and all(set(g) == GROUP_FIELDS for g in groups)
    sizes = [g["size"] for g in groups]
    assert sizes == sorted(sizes, reverse=True)
    assert all(len(g["sightings"]) == g["size"] for g in groups)  # under the members cap
    assert all(s["cluster"] == g["id"] for g in groups for s in g["sightings"])
    r = c.get("/api/unknowns?limit=1&members=1")
    assert len(r.json()) == 1 and len(r.json()[0]["sightings"]) == 1
    assert r.json()[0]["size"] == sizes[0]
    if len(groups) > 1:
        assert r.headers["x-next-cursor"] == "1"
        assert c.get("/api/unknowns?limit=1&cursor=1").json()[0]["id"] == groups[1]["id"]


def test_name_a_group_then_not_then_assign_one_sighting(lib_api):
    c, _ = lib_api
    group = c.get("/api/unknowns").json()[0]
    r = c.post(f"/api/unknowns/{group['id']}/assign", json={"name": DEMO_PERSON})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == DEMO_PERSON and 1 <= r.json()["faces"] <= 10
    person = next(p for p in c.get("/api/people").json() if p["name"] == DEMO_PERSON)
    assert person["faces"] == r.json()["faces"]
    assert group["id"] not in [g["id"] for g in c.get("/api/unknowns").json()]
    named = c.get(f"/api/sightings?name={DEMO_PERSON}&limit=500").json()
    assert sorted(s["id"] for s in named) == sorted(s["id"] for s in group["sightings"])
    # The same group again: stale, said so.
    r = c.post(f"/api/unknowns/{group['id']}/assign", json={"name": DEMO_PERSON})
    assert r.status_code == 404 and "already assigned" in r.json()["detail"]
    # "Not this person" on one of them: unknown again.
    sid = named[0]["id"]
    r = c.post(f"/api/sightings/{sid}/not", json={"name": "someone else"})
    assert r.status_code == 404 and "no person named" in r.json()["detail"]
    r = c.post(f"/api/sightings/{sid}/not", json={"name": DEMO_PERSON.lower()})
    assert r.status_code == 200 and r.json() == {"sighting": sid, "not": DEMO_PERSON}
    after = c.get("/api/sightings?unknown=true&limit=500").json()
    assert sid in [s["id"] for s in after]
    r = c.post(f"/api/sightings/{sid}/not", json={"name": DEMO_PERSON})
    assert r.status_code == 409 and "unknown, not" in r.json()["detail"]
    # "This is ..." for that one sighting.
    r = c.post(f"/api/sightings/{sid}/assign", json={"name": "Stage Guest"})
    assert r.status_code == 200 and r.json()["name"] == "Stage Guest"
    assert any(p["name"] == "Stage Guest" for p in c.get("/api/people").json())


def test_ignore_hides_a_group_unless_all(lib_api):
    c, _ = lib_api
    groups = c.get("/api/unknowns").json()
    if not groups:
        pytest.skip("no group left to ignore")
    gid = groups[-1]["id"]
    r = c.post(f"/api/unknowns/{gid}/ignore")
    assert r.status_code == 200 and r.json() == {"group": gid, "ignored": True}
    assert gid not in [g["id"] for g in c.get("/api/unknowns").json()]
    shown = {g["id"]: g for g in c.get("/api/unknowns?all=true").json()}
    assert shown[gid]["ignored"] is True
    assert c.post("/api/unknowns/999999/ignore").status_code == 404


@pytest.mark.parametrize("path", ["/api/unknowns/1/assign", "/api/sightings/1/assign",
                                  "/api/sightings/1/not"])
@pytest.mark.parametrize("body, status, words", [
    (b'{"name": ', 400, "malformed JSON"),
    (b"{}", 422, "name:"),
    (b'{"name": ""}', 400, "must not be empty"),
    (b'{"name": "tab\\tin"}', 400, "control character"),
])
def test_bad_bodies(lib_api, path, body, status, words):
    c, _ = lib_api
    r = c.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_unknown_ids(lib_api):
    c, _ = lib_api
    for path in ["/api/unknowns/999999/assign", "/api/sightings/999999/assign"]:
        r = c.post(path, json={"name": "Anyone"})
        assert r.status_code == 404 and "999999" in r.json()["detail"], path
    r = c.post("/api/sightings/999999/not", json={"name": DEMO_PERSON})
    assert r.status_code == 404 and "no sighting 999999" in r.json()["detail"]


def test_metrics_count_the_sightings(lib_api):
    c, _ = lib_api
    stored = len(c.get("/api/sightings?limit=500").json())
    text = c.get("/metrics").text
    assert f"edgeface_sightings {float(stored)}" in text
    people = len(c.get("/api/people").json())
    assert re.search(rf"^edgeface_people {float(people)}$", text, flags=re.M)


def test_the_pages_show_the_library(lib_api):
    c, _ = lib_api
    history = c.get("/history")
    assert history.status_code == 200 and "/crop.jpg" in history.text
    for name in {s["name"] for s in c.get("/api/sightings?limit=50").json() if s["name"]}:
        assert name in history.text  # e.g. the group named above
        assert c.get(f"/history?name={name}").status_code == 200
    assert c.get("/history?day=nonsense").status_code == 422
    strangers = c.get("/strangers?all=true")
    assert strangers.status_code == 200 and 'class="card group"' in strangers.text
