"""runtime: LiteRT's native start-up notice is kept off stderr below DEBUG, shown at DEBUG."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import PEOPLE, ROOT

pytestmark = pytest.mark.device

PHOTO = PEOPLE / "obama" / "obama_1.jpg"
NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def identify(tmp_path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`edgeface-cam identify` on a real photo in a fresh process (the notice is printed once
    per process, by the first interpreter built)."""
    env = dict(os.environ, HOME=str(tmp_path), OMP_NUM_THREADS="1")
    env.pop("EDGEFACE_CAM_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "edgeface_cam", "identify", "--json",
                           "--set", "recognizer.threads=1", *flags, str(PHOTO)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("backend", ["yunet", "blazeface"])  # blazeface: a second interpreter
def test_no_runtime_notice_at_the_default_log_level(tmp_path, backend):
    r = identify(tmp_path, "--set", f"detector.backend={backend}")
    assert r.returncode == 0, r.stderr
    assert "XNNPACK" not in r.stderr and "INFO:" not in r.stderr, r.stderr
    assert '"name"' in r.stdout  # the photo was identified: the model did load


def test_runtime_notice_is_shown_with_debug_logging(tmp_path):
    r = identify(tmp_path, "--log-level", "DEBUG")
    assert r.returncode == 0, r.stderr
    assert NOTICE in r.stderr.splitlines()


def test_other_native_output_is_passed_on(capfd):
    """Only the notices are dropped: what else reaches fd 2 meanwhile still gets there."""
    from edgeface_cam.runtime import native_notices_hidden

    with native_notices_hidden():
        os.write(2, b"INFO: a notice\n")
        os.write(2, b"ERROR: a real problem\n")
    err = capfd.readouterr().err
    assert "ERROR: a real problem" in err and "a notice" not in err
