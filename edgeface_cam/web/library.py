"""The face library over REST: sightings (history), groups of unknown faces, and the user's
corrections ("this is X", "not X", ignore). The gallery does the work; these routes check the
input and report with the CLI's ``--json`` objects."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from .api import state_of
from .state import WebState

router = APIRouter(tags=["library"])


class NameBody(BaseModel):
    name: str


def _library(state: WebState, create: bool = False) -> Any:
    g = state.gallery(create=create)
    if g is not None and not hasattr(g, "sightings"):
        raise HTTPException(501, "this gallery version keeps no sightings")
    return g


def unknowns_view(state: WebState, include_ignored: bool = False) -> list[dict[str, Any]]:
    return []


def sightings_view(state: WebState, **query: Any) -> dict[str, Any]:
    return {"sightings": [], "next_cursor": None, "next_query": ""}


@router.get("/api/sightings")
def sightings(request: Request) -> Response:
    _library(state_of(request))
    raise HTTPException(501, "not yet")
