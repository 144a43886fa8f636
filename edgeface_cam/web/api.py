"""The REST API's core routes: health, login/logout, people and their faces, identify, status,
the cameras' pictures and /metrics. Paths and JSON objects are a contract (docs/web.md); the
objects are the CLI's ``--json`` ones (``report``)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import __version__
from ..app import UserError
from ..enroll import Sample, enroll_person, pick_face
from ..gallery import Gallery, GalleryError, Person, validate_name
from ..report import face_json
from .images import UploadError, decode_image, parse_multipart
from .live import BOUNDARY
from .metrics import render
from .security import SESSION_COOKIE
from .state import WebState
from .status import status_json

router = APIRouter()


class Login(BaseModel):
    password: str = Field(max_length=1024)


class NewPerson(BaseModel):
    name: str
    notes: str | None = None


class PersonChange(BaseModel):
    name: str


def state_of(request: Request) -> WebState:
    return request.app.state.web


def person_json(p: Person) -> dict[str, Any]:
    """A person as the API shows them: ``list --json``'s fields, and ``faces``."""
    return {"name": p.name, "faces": p.embeddings, "embeddings": p.embeddings,
            "other_model": p.other_model, "created_at": p.created_at, "notes": p.notes}


def require_person(gallery: Gallery | None, name: str) -> Person:
    """The person, or 404 with the gallery's own message (and did-you-mean)."""
    if gallery is None:
        raise HTTPException(404, f"no person named {name!r} (nobody is enrolled yet)")
    try:
        return gallery.require_person(name)
    except GalleryError as e:
        raise HTTPException(404, str(e)) from None


# --- health and login ---------------------------------------------------------------------------
@router.get("/api/health", tags=["status"])
def health(request: Request) -> dict[str, Any]:
    """No login needed: for monitors and load balancers."""
    state = state_of(request)
    return {"status": "ok", "version": __version__,
            "uptime_s": round(time.monotonic() - state.started, 1),
            "password_set": state.auth.has_password}


@router.post("/api/login", tags=["auth"])
def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    """The admin password -> a session cookie (HttpOnly, SameSite=Strict; Secure under TLS)."""
    state = state_of(request)
    address = request.client.host if request.client else "?"
    wait = state.limiter.retry_after(address)
    if wait > 0:
        raise HTTPException(429, f"too many failed logins from {address}: try again in "
                                 f"{wait:.0f} s", headers={"Retry-After": str(int(wait) + 1)})
    if not state.auth.has_password:
        raise HTTPException(401, "no web password is set: run `edgeface-cam passwd` on the "
                                 "device")
    if not state.auth.verify_password(body.password):
        state.limiter.failed(address)
        raise HTTPException(401, "wrong password")
    sid = state.sessions.open(state.auth.password_id())
    secure = state.tls or request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, sid, max_age=int(state.sessions.ttl_s), httponly=True,
                        samesite="strict", secure=secure, path="/")
    return {"status": "ok"}


@router.post("/api/logout", tags=["auth"])
def logout(request: Request, response: Response) -> dict[str, Any]:
    who = request.scope.get("state", {}).get("who")
    if who and who[0] == "session":
        state_of(request).sessions.close(who[1])
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return {"status": "ok"}


# --- people -------------------------------------------------------------------------------------
@router.get("/api/people", tags=["people"])
def people(request: Request) -> list[dict[str, Any]]:
    g = state_of(request).gallery()
    return [] if g is None else [person_json(p) for p in g.people()]


@router.post("/api/people", status_code=201, tags=["people"])
def add_person(body: NewPerson, request: Request) -> dict[str, Any]:
    g = state_of(request).gallery(create=True)
    assert g is not None
    name = validate_name(body.name)
    existing = g.find_person(name)
    if existing is not None:
        raise HTTPException(409, f"a person named {existing.name!r} already exists")
    return person_json(require_person(g, g.create(name, body.notes)))


@router.patch("/api/people/{name}", tags=["people"])
def change_person(name: str, body: PersonChange, request: Request) -> dict[str, Any]:
    """Rename: ``{"name": NEW}`` (a change of case only is fine)."""
    g = state_of(request).gallery()
    person = require_person(g, name)
    assert g is not None
    new = validate_name(body.name)
    other = g.find_person(new)
    if other is not None and other.id != person.id:
        raise HTTPException(409, f"a person named {other.name!r} already exists")
    g.rename(person.name, new)
    return person_json(require_person(g, new))


@router.delete("/api/people/{name}", tags=["people"])
def remove_person(name: str, request: Request) -> dict[str, Any]:
    g = state_of(request).gallery()
    person = require_person(g, name)
    assert g is not None
    return {"removed": g.remove(person.name)}


async def _images(request: Request) -> list[tuple[str, bytes]]:
    """The ``image`` fields of a multipart body: (label, bytes) each."""
    parts = parse_multipart(await request.body(), request.headers.get("content-type", ""))
    images = [(p.filename or f"image {i + 1}", p.data) for i, p in
              enumerate(q for q in parts if q.name == "image")]
    if not images:
        raise UploadError(422, "no `image` field in the form (one per photo)")
    return images


def _analyze_upload(state: WebState, label: str, data: bytes) -> dict[str, Any]:
    """One photo's result: ``ok`` with its face, or ``error``."""
    try:
        image = decode_image(data, label)
        face = pick_face(state.analyze(image), label)
    except (UploadError, UserError) as e:
        status = e.status if isinstance(e, UploadError) else 422
        return {"file": label, "ok": False, "status": status,
                "error": getattr(e, "detail", None) or " ".join(str(e).split())}
    return {"file": label, "ok": True, "face": face, "digest": hashlib.sha256(
        image.tobytes()).hexdigest(), "quality": round(float(face.quality), 3),
        "box": [round(float(v)) for v in face.face.box]}


def _public(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("face", "digest")}


@router.post("/api/people/{name}/faces", status_code=201, tags=["people"])
async def add_faces(name: str, request: Request, force: bool = False) -> JSONResponse:
    """Photos (multipart field ``image``, repeatable) of one person: per-photo results; all
    are enrolled in one transaction, or none (422) when one has no usable face or they do not
    look like the same person (``?force=true`` enrols them anyway)."""
    state = state_of(request)
    person = require_person(state.gallery(), name)
    images = await _images(request)
    return await run_in_threadpool(_enroll_uploads, state, person, images, force)


def _enroll_uploads(state: WebState, person: Person, images: list[tuple[str, bytes]],
                    force: bool) -> JSONResponse:
    results = [_analyze_upload(state, label, data) for label, data in images]
    bad = [r for r in results if not r["ok"]]
    if bad:
        status = 413 if all(r["status"] == 413 for r in bad) else 422
        return JSONResponse({"detail": f"nothing enrolled: {bad[0]['error']}",
                             "results": [_public(r) for r in results]}, status_code=status)
    samples = [Sample(r["face"], r["file"], r["digest"]) for r in results]
    try:
        done = enroll_person(state.parts, person.name, samples, force=force)
    except UserError as e:
        return JSONResponse({"detail": " ".join(str(e).split()),
                             "results": [_public(r) for r in results]}, status_code=422)
    for r in results:
        r["skipped"] = r["file"] in done.skipped
    return JSONResponse({"name": done.name, "added": done.faces,
                         "results": [_public(r) for r in results]}, status_code=201)


@router.post("/api/identify", tags=["recognition"])
async def identify(request: Request) -> dict[str, Any]:
    """One photo (multipart field ``image``): every face found, named or not. Stores nothing."""
    state = state_of(request)
    images = await _images(request)
    if len(images) != 1:
        raise UploadError(422, f"identify takes one `image`, got {len(images)}")
    label, data = images[0]
    return await run_in_threadpool(_identify, state, label, data)


def _identify(state: WebState, label: str, data: bytes) -> dict[str, Any]:
    image = decode_image(data, label)
    results = state.analyze(image)
    g = state.gallery()
    matches = g.match_many(np.stack([r.embedding for r in results])) \
        if g is not None and results and len(g) else [None] * len(results)
    return {"faces": [face_json(r, m) for r, m in zip(results, matches, strict=True)]}


# --- status, cameras, metrics -------------------------------------------------------------------
@router.get("/api/status", tags=["status"])
def status(request: Request, doctor: bool = False) -> dict[str, Any]:
    """Cameras (fps, state, who is in view), stage timings, CPU, model, threshold, events;
    ``?doctor=true`` adds the doctor's checks (slow: loads the model once, then cached)."""
    return status_json(state_of(request), with_doctor=doctor)


def _camera(state: WebState, name: str) -> str:
    hub = state.hub
    names = hub.camera_names() if hub is not None else []
    if name not in names:
        known = ", ".join(names) or "none: this server runs without a camera"
        raise HTTPException(404, f"no camera named {name!r} (cameras: {known})")
    return name


@router.get("/api/cameras/{name}/stream.mjpg", tags=["cameras"])
def stream(name: str, request: Request) -> StreamingResponse:
    """The annotated picture as MJPEG, at web.live_fps (encoded only while watched)."""
    state = state_of(request)
    cam = _camera(state, name)
    assert state.hub is not None
    return StreamingResponse(state.hub.mjpeg(cam), media_type=f"multipart/x-mixed-replace; "
                             f"boundary={BOUNDARY}")


@router.get("/api/cameras/{name}/snapshot.jpg", tags=["cameras"])
def snapshot(name: str, request: Request, annotated: bool = True) -> Response:
    """The latest picture (``?annotated=false``: without boxes, e.g. to enrol from it)."""
    state = state_of(request)
    cam = _camera(state, name)
    assert state.hub is not None
    data = state.hub.jpeg(cam, annotated=annotated)
    if data is None:
        raise HTTPException(503, f"camera {cam!r} has no picture yet")
    return Response(data, media_type="image/jpeg")


@router.get("/metrics", tags=["status"])
def metrics(request: Request) -> Response:
    """Prometheus text: frames, fps, stage latency, events by kind, people, sightings."""
    body, content_type = render(state_of(request))
    return Response(body, media_type=content_type)
