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
