"""What the commands (and the web API) report: faces, matches and bench figures as plain JSON
objects, and one-line text forms. One definition, so `--json` and the REST API agree."""

from __future__ import annotations

import json
from typing import Any

from .gallery import Match
from .recognize import FaceResult


def box_list(face_result: FaceResult) -> list[int]:
    return [round(float(v)) for v in face_result.face.box]


def rounded(value: float, places: int) -> float:
    """``value`` rounded, never "-0.0" (a tiny negative cosine is no less than zero to a user)."""
    return round(float(value), places) + 0.0


def face_json(r: FaceResult, match: Match | None) -> dict[str, Any]:
    """One face for --json output: name (None = unknown), score (cosine with the best match;
    None when there is no gallery), box [x, y, w, h]."""
    return {"name": None if match is None else match.name,
            "score": None if match is None else rounded(match.score, 4),
            "box": box_list(r), "quality": round(float(r.quality), 3),
            "detection_score": round(float(r.face.score), 3)}


def face_text(r: FaceResult, match: Match | None) -> str:
    x, y, w, h = box_list(r)
    who = "unknown" if match is None or match.name is None else match.name
    score = "" if match is None else f" {rounded(match.score, 3):.3f}"
    return f"{who}{score} at x={x} y={y} w={w} h={h}"


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def bench_json(spec: str, app: Any, stats: Any, emb: tuple[float, float]) -> dict[str, Any]:
    cfg = app.cfg
    return {
        "source": spec, "model": app.embedder.name, "runtime": app.embedder.runtime,
        "threads": cfg.recognizer.threads, "detector": cfg.detector.backend,
        "frames": stats.frames, "fps": round(stats.fps, 2), "faces": stats.faces,
        "embeddings": stats.embeddings,
        "stages_ms": {k: {"median": round(t.median_ms, 2), "p90": round(t.p90_ms, 2),
                          "count": t.count} for k, t in stats.timings.items()},
        "embed_ms_per_face": {"median": round(emb[0], 2), "p90": round(emb[1], 2)},
        "skipped": stats.skipped,  # frames the motion gate kept from the detector
        "cameras": {name: {"frames": c.frames, "fps": round(c.fps, 2), "skipped": c.skipped}
                    for name, c in stats.cameras.items()},
    }


# --- the face library (sightings, unknowns): field names are a contract (CLI --json, web API) ---
def sighting_json(row: dict[str, Any]) -> dict[str, Any]:
    """One sighting: id, time, source, frame, file, track_id, name (None = unknown), score,
    quality, cluster (its group of unknown faces, or None)."""
    return {"id": int(row["id"]), "time": row["time"], "source": row["source"],
            "frame": row["frame"], "file": row["file"], "track_id": row["track_id"],
            "name": row["name"],
            "score": None if row["score"] is None else rounded(row["score"], 4),
            "quality": None if row["quality"] is None else rounded(row["quality"], 3),
            "cluster": row["group_id"]}


def group_json(group: dict[str, Any]) -> dict[str, Any]:
    """One group of unknown faces: id, size, first_seen, last_seen, ignored, sightings."""
    return {"id": int(group["id"]), "size": int(group["size"]),
            "first_seen": group["first_seen"], "last_seen": group["last_seen"],
            "ignored": bool(group["ignored"]),
            "sightings": [sighting_json(s) for s in group["sightings"]]}


def sighting_text(row: dict[str, Any]) -> str:
    who = row["name"] if row["name"] is not None else (
        f"unknown (group {row['group_id']})" if row["group_id"] is not None else "unknown")
    where = f"{row['source']}" + (f" {row['file']}" if row["file"] else
                                  f" frame {row['frame']}" if row["frame"] is not None else "")
    score = "" if row["score"] is None else f" {rounded(row['score'], 3):.3f}"
    return f"#{row['id']}  {row['time']}  {who}{score}  {where}"


def group_text(group: dict[str, Any]) -> str:
    quiet = "  (ignored)" if group["ignored"] else ""
    ids = ", ".join(f"#{s['id']}" for s in group["sightings"][:5])
    more = ", ..." if len(group["sightings"]) > 5 else ""
    return (f"group {group['id']}: {group['size']} sighting(s), {group['first_seen']} .. "
            f"{group['last_seen']}{quiet}  [{ids}{more}]")
