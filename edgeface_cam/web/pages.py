"""The HTML pages: Live, People, Strangers, History, Status, the login page and the API
reference. Rendered on the server with Jinja2; the buttons call the REST API through
static/app.js (no inline script: the CSP forbids it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException
from starlette.templating import Jinja2Templates

from .. import PROG, __version__
from .api import person_json, require_person, state_of
from .library import sightings_view, unknowns_view
from .state import TEMPLATES
from .status import status_json

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(TEMPLATES))
# "2026-12-01T11:10:05.854+00:00" -> "2026-12-01 11:10:05" (UTC, as stored)
templates.env.filters["when"] = lambda t: str(t)[:19].replace("T", " ") if t else ""
NAV = [("live", "Live"), ("people", "People"), ("strangers", "Strangers"),
       ("history", "History"), ("status", "Status")]
THUMBS = 6


def page(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, f"{name}.html", {
        "nav": NAV, "current": name, "prog": PROG, "version": __version__, **context})


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/live", status_code=303)


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    state = state_of(request)
    return page(request, "login", password_set=state.auth.has_password)


@router.get("/live")
def live_page(request: Request) -> HTMLResponse:
    hub = state_of(request).hub
    return page(request, "live", cameras=hub.camera_names() if hub is not None else [],
                live_fps=state_of(request).cfg.web.live_fps)


@router.get("/people")
def people_page(request: Request) -> HTMLResponse:
    state = state_of(request)
    g = state.gallery()
    people = []
    for p in g.people() if g is not None else []:
        faces = len(g.face_crops(p.name, THUMBS))
        people.append({**person_json(p), "thumbs": list(range(faces))})
    hub = state.hub
    return page(request, "people", people=people,
                cameras=hub.camera_names() if hub is not None else [])


@router.get("/people/{name}/face/{index}.jpg")
def face_thumb(name: str, index: int, request: Request) -> Response:
    g = state_of(request).gallery()
    person = require_person(g, name)
    assert g is not None
    crops = g.face_crops(person.name, THUMBS)
    if not 0 <= index < len(crops):
        raise HTTPException(404, f"{person.name} has no face {index}")
    return Response(crops[index][1], media_type="image/jpeg",
                    headers={"cache-control": "private, max-age=60"})


@router.get("/strangers")
def strangers_page(request: Request, all: bool = False,
                   cursor: int | None = None) -> HTMLResponse:
    state = state_of(request)
    g = state.gallery()
    return page(request, "strangers", **unknowns_view(state, include_ignored=all,
                                                      cursor=cursor),
                names=[p.name for p in g.people()] if g is not None else [], show_all=all)


@router.get("/history")
def history_page(request: Request, name: str | None = None, unknown: bool = False,
                 camera: str | None = None, day: str | None = None,
                 cursor: int | None = None) -> HTMLResponse:
    state = state_of(request)
    g = state.gallery()
    view = sightings_view(state, name=name or None, unknown=unknown, camera=camera or None,
                          day=day or None, cursor=cursor, limit=50)
    hub = state.hub
    return page(request, "history", **view,
                names=[p.name for p in g.people()] if g is not None else [],
                cameras=hub.camera_names() if hub is not None else [],
                filters={"name": name or "", "unknown": unknown, "camera": camera or "",
                         "day": day or ""})


@router.get("/status")
def status_page(request: Request) -> HTMLResponse:
    return page(request, "status", s=status_json(state_of(request), with_doctor=True))


@router.get("/api/docs")
def api_docs(request: Request) -> HTMLResponse:
    """The API reference from the OpenAPI schema, rendered here (Swagger UI would need a CDN,
    and the device is offline)."""
    schema = request.app.openapi()
    routes = [{"method": method.upper(), "path": path, "summary": op.get("summary", ""),
               "doc": op.get("description", ""), "params": [
                   p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]}
              for path, ops in schema["paths"].items() for method, op in ops.items()]
    return page(request, "api_docs", routes=routes)
