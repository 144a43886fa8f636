"""Where the bundled assets (models, detector, demo media) live.

A checkout or editable install finds ``assets/`` beside the package; a wheel install puts them
under ``<prefix>/share/edgeface-cam/assets`` (setup.py ``data_files``); ``$EDGEFACE_CAM_ASSETS``
overrides both (e.g. a read-only system image with the models elsewhere).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _find_assets() -> Path:
    env = os.environ.get("EDGEFACE_CAM_ASSETS")
    if env:
        return Path(env).expanduser()
    beside = Path(__file__).resolve().parent.parent / "assets"
    installed = Path(sys.prefix) / "share" / "edgeface-cam" / "assets"
    return installed if not beside.is_dir() and installed.is_dir() else beside


ASSETS = _find_assets()
