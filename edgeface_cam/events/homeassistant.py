"""Home Assistant MQTT discovery: the retained config messages that make a camera's entities
appear in Home Assistant. Only the messages; the MQTT sink sends them (on every connect).

Per camera: a ``sensor`` (who was seen last) and an occupancy ``binary_sensor`` per known
person, all on one device, available while the camera's status topic says "online".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .base import to_json


def slug(text: str) -> str:
    """An MQTT/Home Assistant safe id: lower case letters, digits and underscores."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s or "x"


class Discovery:
    """The discovery messages for the camera named ``camera``, under ``prefix``."""

    def __init__(self, camera: str, prefix: str = "homeassistant") -> None:
        self.camera = str(camera)
        self.prefix = prefix.rstrip("/")
        self.node = f"edgeface_cam_{slug(self.camera)}"

    def device(self) -> dict[str, Any]:
        return {"identifiers": [self.node], "name": f"edgeface-cam {self.camera}",
                "manufacturer": "edgeface-cam", "model": "EdgeFace"}

    def messages(self, availability: str, person: str,
                 presence: Mapping[str, str]) -> list[tuple[str, str]]:
        """(topic, payload) pairs, each to be published retained. ``availability``: the
        online/offline topic; ``person``: the latest name's topic; ``presence``: known person
        -> their ON/OFF topic."""
        common = {"availability_topic": availability, "device": self.device()}
        sensor = {"name": f"{self.camera} person", "unique_id": f"{self.node}_person",
                  "state_topic": person, "icon": "mdi:face-recognition", **common}
        out = [(f"{self.prefix}/sensor/{self.node}/person/config", to_json(sensor))]
        for p, topic in presence.items():
            cfg = {"name": f"{p} at {self.camera}", "unique_id": f"{self.node}_{slug(p)}",
                   "state_topic": topic, "payload_on": "ON", "payload_off": "OFF",
                   "device_class": "occupancy", **common}
            out.append((f"{self.prefix}/binary_sensor/{self.node}/{slug(p)}/config",
                        to_json(cfg)))
        return out
