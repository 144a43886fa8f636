"""The systemd unit: systemd's own verifier and security scorer, and what the app relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

UNIT = ROOT / "systemd" / "edgeface-cam.service"
MAX_EXPOSURE = 2.5

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    analyze is None, reason="systemd-analyze not installed (apt-get install systemd; "
                            "scripts/test.sh does it when run as root)")


def unit_with_runnable_exec(tmp_path: Path) -> Path:
    """The unit with ExecStart's program replaced by a temp executable: verify checks that the
    program exists, and /opt/edgeface-cam is only there on an installed board."""
    exe = tmp_path / "edgeface-cam"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = UNIT.read_text()
    text, n = re.subn(r"^ExecStart=\S+", f"ExecStart={exe}", text, flags=re.MULTILINE)
    assert n == 1, "one ExecStart= line expected"
    out = tmp_path / "edgeface-cam.service"  # verify wants the real unit name
    out.write_text(text)
    return out


def settings() -> dict[str, list[str]]:
    """Key -> values of the unit (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_analyze
def test_verify_prints_nothing(tmp_path):
    unit = unit_with_runnable_exec(tmp_path)
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


@needs_analyze
def test_per_camera_template_verifies_and_reads_its_own_config(tmp_path):
    """install.sh makes edgeface-cam@.service with systemd/instance-unit.sed: the instance runs
    the same program with /etc/edgeface-cam/INSTANCE.yaml."""
    unit = unit_with_runnable_exec(tmp_path)
    r = subprocess.run(["sed", "-f", str(ROOT / "systemd" / "instance-unit.sed"), str(unit)],
                       capture_output=True, text=True, check=True)
    template = r.stdout
    assert "Environment=EDGEFACE_CAM_CONFIG=%E/edgeface-cam/%i.yaml" in template
    assert not [ln for ln in template.splitlines()
                if "config.yaml" in ln and not ln.startswith("#")]
    assert "Description=edgeface-cam face recognition, camera %i" in template
    # Everything but those two lines is the main unit's.
    changed = [(a, b) for a, b in zip(unit.read_text().splitlines(), template.splitlines(),
                                      strict=True) if a != b]
    assert len(changed) == 2, changed
    instance = tmp_path / "edgeface-cam@door.service"
    instance.write_text(template)
    v = subprocess.run([analyze, "verify", str(instance)], capture_output=True, text=True,
                       timeout=60)
    assert (v.returncode, v.stdout + v.stderr) == (0, "")


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a typo in a key is reported."""
    unit = unit_with_runnable_exec(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert "ProtectHom" in r.stdout + r.stderr


@needs_analyze
def test_security_exposure_is_low(tmp_path):
    unit = unit_with_runnable_exec(tmp_path)
    r = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    if m is None and "--offline" in r.stderr:
        pytest.skip(f"this systemd-analyze cannot score offline: {r.stderr.strip()}")
    assert m, r.stdout + r.stderr
    exposure = float(m.group(1))
    print(f"systemd-analyze security: {exposure}")
    assert exposure <= MAX_EXPOSURE, r.stdout


def test_unit_matches_what_the_app_does():
    s = settings()
    assert s["Type"] == ["notify"]  # service.serve sends READY=1 once the pipeline is built
    assert int(s["WatchdogSec"][0].rstrip("s")) >= 10  # pings every heartbeat, >= 1 a second
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # service: SIGHUP reloads
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["edgeface"]  # the user install.sh creates and docs enrol as
    assert s["StateDirectory"] == ["edgeface-cam"]
    assert s["ConfigurationDirectory"] == ["edgeface-cam"]
    assert s["Environment"].count("EDGEFACE_CAM_CONFIG=%E/edgeface-cam/config.yaml") == 1
    assert s["ProtectSystem"] == ["strict"] and s["DevicePolicy"] == ["closed"]
    assert "char-video4linux rw" in s["DeviceAllow"]


def test_exec_start_runs_an_existing_command():
    """ExecStart's arguments are a real edgeface-cam command line."""
    exec_start = settings()["ExecStart"][0].split()
    assert exec_start[0] == "/opt/edgeface-cam/venv/bin/edgeface-cam"  # install.sh rewrites it
    r = subprocess.run([sys.executable, "-m", "edgeface_cam", *exec_start[1:], "--help"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
