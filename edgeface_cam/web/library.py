"""The face library over REST: sightings (history), groups of unknown faces, and the user's
corrections ("this is X", "not X", ignore). ``gallery.Library`` does the work (one transaction
each, stale ids refused); these routes check the input and answer with the CLI's ``--json``
objects (``report``)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..gallery import GalleryError, Library, parse_when, validate_name
from ..report import group_json, sighting_json
from .api import state_of
from .state import WebState

router = APIRouter(tags=["library"])
PAGE = 50
MAX_PAGE = 500
GROUP_PAGE = 50  # groups a page of /api/unknowns
MEMBERS = 20  # sightings listed per group (its size counts them all)


class NameBody(BaseModel):
    name: str


def _library(state: WebState, create: bool = False) -> Library | None:
    g = state.gallery(create=create)
    return None if g is None else Library(g)


def _require_library(state: WebState) -> Library:
    lib = _library(state)
    if lib is None:
        raise HTTPException(404, "no gallery yet: nothing has been seen")
    return lib


def _not_found_or_bad(e: GalleryError) -> HTTPException:
    """An unknown or stale id or name is 404 (the gallery's message says which and where it
    went); anything else 409 (the request does not fit the library's state)."""
    text = " ".join(str(e).split())
    missing = text.startswith(("no ", "nobody")) or "no longer exists" in text or \
        "was merged into" in text or "already assigned" in text
    return HTTPException(404 if missing else 409, text)


def _day_range(day: str | None) -> tuple[str | None, str | None]:
    if not day:
        return None, None
    try:
        d = date.fromisoformat(day)
    except ValueError:
        raise HTTPException(422, f"day: {day!r} is not a date (YYYY-MM-DD)") from None
    return d.isoformat(), (d + timedelta(days=1)).isoformat()


def list_sightings(state: WebState, *, name: str | None = None, unknown: bool = False,
                   since: str | None = None, camera: str | None = None,
                   day: str | None = None, cursor: int | None = None,
                   limit: int = PAGE) -> tuple[list[dict[str, Any]], int | None]:
    """One page, newest first, and the cursor of the next page (None: the last page)."""
    lib = _library(state)
    if lib is None:
        return [], None
    first, after = _day_range(day)
    if since:
        try:
            parse_when(since)
        except GalleryError as e:
            raise HTTPException(422, f"since: {e}") from None
    try:
        rows = lib.sightings(name=name, unknown=unknown, since=since or first, until=after,
                             source=camera, before_id=cursor, limit=limit + 1)
    except GalleryError as e:
        raise _not_found_or_bad(e) from None
    more = len(rows) > limit
    rows = rows[:limit]
    return [sighting_json(r) for r in rows], (int(rows[-1]["id"]) if more else None)


def sightings_view(state: WebState, *, limit: int = PAGE, **query: Any) -> dict[str, Any]:
    """The History page's rows and the link to the next page."""
    rows, nxt = list_sightings(state, limit=limit, **query)
    params = {k: v for k, v in query.items() if v and k != "cursor"}
    return {"sightings": rows, "next_cursor": nxt,
            "next_query": urlencode({**params, "cursor": nxt}) if nxt else ""}


def list_unknowns(state: WebState, include_ignored: bool = False, offset: int = 0,
                  limit: int = GROUP_PAGE, members: int = MEMBERS
                  ) -> tuple[list[dict[str, Any]], int | None]:
    """One page of groups, largest first, and the next page's offset (None: the last)."""
    lib = _library(state)
    if lib is None:
        return [], None
    rows = lib.groups(include_ignored, limit=limit + 1, offset=offset, members=members)
    nxt = offset + limit if len(rows) > limit else None
    return [group_json(g) for g in rows[:limit]], nxt


def unknowns_view(state: WebState, include_ignored: bool = False,
                  cursor: int | None = None) -> dict[str, Any]:
    """The Strangers page's groups and the link to the next page."""
    groups, nxt = list_unknowns(state, include_ignored, offset=cursor or 0, limit=24,
                                members=24)
    query = {"all": "true"} if include_ignored else {}
    return {"groups": groups, "next_cursor": nxt,
            "next_query": urlencode({**query, "cursor": nxt}) if nxt else ""}


# --- sightings ----------------------------------------------------------------------------------
@router.get("/api/sightings", response_model=list[dict[str, Any]])
def sightings(request: Request, name: str | None = None,
              unknown: bool = False, since: str | None = None, camera: str | None = None,
              day: str | None = None, cursor: int | None = Query(None, ge=1),
              limit: int = Query(PAGE, ge=1, le=MAX_PAGE)) -> JSONResponse:
    """Newest first, ``limit`` a page (at most 500); the next page's ``cursor`` is in the
    ``X-Next-Cursor`` header (and a ``Link: rel="next"``), absent on the last page. ``since``:
    ISO 8601 or an age (30m, 2h, 7d); ``day``: YYYY-MM-DD; ``camera``: the source's name."""
    if name is not None and unknown:
        raise HTTPException(422, "give name or unknown, not both")
    rows, nxt = list_sightings(state_of(request), name=name, unknown=unknown, since=since,
                               camera=camera, day=day, cursor=cursor, limit=limit)
    return _page(request, rows, nxt)


def _page(request: Request, rows: list[dict[str, Any]], cursor: int | None) -> JSONResponse:
    """The rows as JSON (plain dicts: FastAPI's response validation of 1,000 rows would cost
    more than the query), with the next page's cursor in X-Next-Cursor and Link."""
    response = JSONResponse(rows)
    if cursor is not None:
        response.headers["X-Next-Cursor"] = str(cursor)
        query = dict(request.query_params) | {"cursor": str(cursor)}
        response.headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return response


@router.get("/api/sightings/{id}/crop.jpg")
def sighting_crop(id: int, request: Request) -> Response:
    """The sighting's aligned face crop (JPEG)."""
    lib = _require_library(state_of(request))
    try:
        crop = lib.crop(id)
    except GalleryError as e:
        raise _not_found_or_bad(e) from None
    if crop is None:
        raise HTTPException(404, f"sighting {id} has no crop")
    return Response(crop, media_type="image/jpeg",
                    headers={"cache-control": "private, max-age=3600"})


@router.post("/api/sightings/{id}/not")
async def sighting_not(id: int, body: NameBody, request: Request) -> dict[str, Any]:
    """"Not this person": the face becomes a negative of ``name``; the sighting is unknown."""
    validate_name(body.name)
    lib = _require_library(state_of(request))
    try:
        stored = await run_in_threadpool(lib.mark_not, id, body.name)
    except GalleryError as e:
        raise _not_found_or_bad(e) from None
    return {"sighting": id, "not": stored}


@router.post("/api/sightings/{id}/assign")
async def sighting_assign(id: int, body: NameBody, request: Request) -> dict[str, Any]:
    """"This is ``name``" (new or existing) for one sighting."""
    validate_name(body.name)
    lib = _require_library(state_of(request))

    def run() -> str:
        return lib.assign(body.name, lib.faces_for(sighting=id), sighting=id)

    try:
        stored = await run_in_threadpool(run)
    except GalleryError as e:
        raise _not_found_or_bad(e) from None
    return {"sighting": id, "name": stored}


# --- groups of unknown faces --------------------------------------------------------------------
@router.get("/api/unknowns", response_model=list[dict[str, Any]])
def unknowns(request: Request, all: bool = False,
             cursor: int = Query(0, ge=0), limit: int = Query(GROUP_PAGE, ge=1, le=MAX_PAGE),
             members: int = Query(MEMBERS, ge=1, le=MAX_PAGE)) -> JSONResponse:
    """Groups of unknown faces, largest first, each with its newest ``members`` sightings
    (``size`` counts them all); ``all``: ignored groups too. Paged like /api/sightings: the
    next page's ``cursor`` is in ``X-Next-Cursor`` and ``Link``."""
    groups, nxt = list_unknowns(state_of(request), all, offset=cursor, limit=limit,
                                members=members)
    return _page(request, groups, nxt)


@router.post("/api/unknowns/{id}/assign")
async def unknown_assign(id: int, body: NameBody, request: Request) -> dict[str, Any]:
    """"This is ``name``": the group's best faces (at most 10) enrolled as that person."""
    validate_name(body.name)
    lib = _require_library(state_of(request))

    def run() -> tuple[str, int]:
        faces = lib.faces_for(cluster=id)
        return lib.assign(body.name, faces, cluster=id), len(faces)

    try:
        stored, n = await run_in_threadpool(run)
    except GalleryError as e:
        raise _not_found_or_bad(e) from None
    return {"group": id, "name": stored, "faces": n}


@router.post("/api/unknowns/{id}/ignore")
def unknown_ignore(id: int, request: Request) -> dict[str, Any]:
    """The group is no longer listed by default; its later faces join it quietly."""
    lib = _require_library(state_of(request))
    try:
        lib.ignore(id)
    except GalleryError as e:
        raise _not_found_or_bad(e) from None
    return {"group": id, "ignored": True}
