"""``GET /metrics``: Prometheus text, collected at scrape time from the running pipeline and the
gallery (nothing is counted on the frame path)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..gallery import Library
from .state import WebState


class _Collector:
    def __init__(self, state: WebState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        hub = self.state.hub
        pipeline = hub.pipeline if hub is not None else None
        frames = CounterMetricFamily("edgeface_frames", "frames processed", labels=["camera"])
        fps = GaugeMetricFamily("edgeface_fps", "processed frames per second",
                                labels=["camera"])
        if pipeline is not None:
            for name, c in pipeline.stats().cameras.items():
                frames.add_metric([name], c.frames)
                fps.add_metric([name], c.fps)
        yield frames
        yield fps
        latency = GaugeMetricFamily("edgeface_stage_latency_ms", "stage latency (rolling)",
                                    labels=["stage", "quantile"])
        if pipeline is not None:
            for stage, t in pipeline.timer.summary().items():
                latency.add_metric([stage, "0.5"], t.median_ms)
                latency.add_metric([stage, "0.9"], t.p90_ms)
        yield latency
        events = CounterMetricFamily("edgeface_events", "events by kind", labels=["kind"])
        for kind, n in sorted((hub.events_by_kind if hub is not None else {}).items()):
            events.add_metric([kind], n)
        yield events
        yield from self._gallery()

    def _gallery(self) -> Iterator[Any]:
        g = self.state.gallery()
        yield GaugeMetricFamily("edgeface_people", "people enrolled",
                                value=len(g.people()) if g is not None else 0)
        yield GaugeMetricFamily("edgeface_sightings", "sightings stored",
                                value=Library(g).count() if g is not None else 0)


def render(state: WebState) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(state))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
