"""``GET /api/status`` and the Status page: per camera fps and state, stage timings, CPU, model,
the threshold in force, events, and (on request) the doctor's checks."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict
from typing import Any

from .. import __version__, doctor
from .state import WebState

DOCTOR_CACHE_S = 300.0  # the checks load a model: at most once every 5 minutes
_cpu_lock = threading.Lock()
_cpu_last: list[float] = []  # [wall, cpu] of the previous call


def cpu_json() -> dict[str, Any]:
    """This process's CPU use since the previous call (percent of one core), load, cores."""
    t = os.times()
    now, cpu = time.monotonic(), t.user + t.system
    with _cpu_lock:
        prev = list(_cpu_last)
        _cpu_last[:] = [now, cpu]
    share = None
    if prev and now > prev[0]:
        share = round(100 * (cpu - prev[1]) / (now - prev[0]), 1)
    return {"process_percent": share, "process_cpu_s": round(cpu, 1),
            "load_1m": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}


def _camera_state(cam: Any) -> str:
    if getattr(cam, "error", None) is not None:
        return f"error: {cam.error}"
    if getattr(cam, "ended", False):
        return "ended"
    return "running" if cam.frames else "starting"


def cameras_json(state: WebState) -> list[dict[str, Any]]:
    hub = state.hub
    pipeline = hub.pipeline if hub is not None else None
    if pipeline is None:
        return []
    stats = pipeline.stats()
    out = []
    for cam in pipeline.cameras:
        c = stats.cameras.get(cam.name)
        out.append({"name": cam.name, "state": _camera_state(cam),
                    **({k: round(v, 2) if isinstance(v, float) else v
                        for k, v in asdict(c).items()} if c else {}),
                    "in_view": hub.in_view(cam.name)})
    return out


def stages_json(state: WebState) -> dict[str, Any]:
    hub = state.hub
    if hub is None or hub.pipeline is None:
        return {}
    return {k: {"median": round(t.median_ms, 2), "p90": round(t.p90_ms, 2), "count": t.count}
            for k, t in hub.pipeline.timer.summary().items()}


def model_json(state: WebState) -> dict[str, Any]:
    hub = state.hub
    rec = getattr(hub.pipeline, "recognizer", None) if hub is not None and hub.pipeline else None
    emb = getattr(rec, "embedder", None)
    if emb is None:
        return {"name": state.cfg.model_path().stem, "fingerprint": None, "runtime": None}
    return {"name": emb.name, "fingerprint": emb.fingerprint, "runtime": emb.runtime,
            "threads": state.cfg.recognizer.threads, "detector": state.cfg.detector.backend}


def threshold_json(state: WebState) -> dict[str, Any]:
    """The threshold in force (the running pipeline's gallery when there is one) and, where
    the gallery can say, its expected rates."""
    hub = state.hub
    g = getattr(hub.pipeline, "gallery", None) if hub is not None and hub.pipeline else None
    g = g if g is not None else state.gallery()
    setting = state.cfg.recognizer.threshold
    out: dict[str, Any] = {"setting": setting,
                           "value": getattr(g, "threshold", None) if g is not None else None}
    describe = getattr(g, "describe_threshold", None)
    if callable(describe):
        out["describe"] = describe()
    fpir = getattr(g, "expected_fpir", None)
    if callable(fpir):
        out["expected_strangers_named"] = fpir()
    return out


def doctor_json(state: WebState) -> list[dict[str, str]]:
    cached = state.doctor_cache
    if cached is None or time.monotonic() - cached[0] > DOCTOR_CACHE_S:
        checks = doctor.main_checks(state.cfg, gallery=state.parts.db_path, camera=False)
        cached = state.doctor_cache = (time.monotonic(), checks)
    return [{"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix}
            for c in cached[1]]


def status_json(state: WebState, with_doctor: bool = False) -> dict[str, Any]:
    hub = state.hub
    g = state.gallery()
    out: dict[str, Any] = {
        "version": __version__, "uptime_s": round(time.monotonic() - state.started, 1),
        "camera_mode": hub is not None and hub.pipeline is not None,
        "cameras": cameras_json(state), "stages_ms": stages_json(state), "cpu": cpu_json(),
        "model": model_json(state), "threshold": threshold_json(state),
        "people": len(g.people()) if g is not None else 0,
        "events": dict(hub.events_by_kind) if hub is not None else {},
        "recent_events": list(hub.recent)[:10] if hub is not None else [],
        "live": {"fps": state.cfg.web.live_fps,
                 "watchers": hub.watchers if hub is not None else 0},
    }
    if with_doctor:
        out["doctor"] = doctor_json(state)
    return out
