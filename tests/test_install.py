"""install.sh: options and mistakes, a real --no-system install (venv, working command, upgrade,
uninstall keeping the gallery, purge), and the system install inside a private mount namespace.

The two real installs create a venv and pip-install OpenCV and LiteRT into it (from pip's cache
after the first time): about a minute each on two cores.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from .conftest import PEOPLE, ROOT

INSTALL = ROOT / "install.sh"
PHOTO = PEOPLE / "obama" / "obama_1.jpg"
SYSTEM_PATHS = [Path("/etc/edgeface-cam"), Path("/var/lib/edgeface-cam"),
                Path("/usr/local/bin/edgeface-cam"),
                Path("/etc/systemd/system/edgeface-cam.service")]


def sh(*args: object, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def run(*args: object, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("cwd", "/")  # never import the checkout instead of the installed copy
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# --- options -------------------------------------------------------------------------------------
def test_help_lists_every_option():
    r = sh("--help")
    assert r.returncode == 0 and r.stderr == ""
    for option in ("--prefix DIR", "--no-service", "--no-system", "--dev", "--uninstall",
                   "--purge", "--help"):
        assert option in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--prefix"], "--prefix needs a folder"),
    (["--prefix", "relative/dir", "--no-system"], "absolute path"),
    (["--prefix", "/usr", "--no-system"], "system folder"),
    (["--prefix", "/tmp/with space", "--no-system"], "absolute path"),
])
def test_mistakes_are_one_line_errors(args, needle, tmp_path):
    r = sh(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("install.sh: error: ") and needle in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("setpriv") is None and os.geteuid() == 0,
                    reason="needs setpriv to drop root")
def test_system_install_needs_root(tmp_path):
    cmd = ["bash", str(INSTALL), "--prefix", str(tmp_path / "p")]
    if os.geteuid() == 0:  # as nobody
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 1
    assert "run as root" in r.stderr and "--no-system" in r.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed "
                    "(apt-get install shellcheck)")
def test_shellcheck_is_clean():
    r = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


# --- a real install under a prefix ---------------------------------------------------------------
def gallery_people(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [row[0] for row in con.execute("SELECT name FROM people ORDER BY name")]


@pytest.mark.slow
def test_no_system_install_upgrade_uninstall_purge(tmp_path):
    prefix = tmp_path / "efc"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("EDGEFACE_CAM_CONFIG", None)
    outside_before = {p: p.exists() for p in SYSTEM_PATHS}
    user_before = user_exists("edgeface")

    r = sh("--prefix", prefix, "--no-system", env=env, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    command = prefix / "bin" / "edgeface-cam"
    # The command works from anywhere and runs the copy under the prefix, not this checkout.
    help_ = run(command, "--help", env=env)
    assert help_.returncode == 0 and "enroll" in help_.stdout, help_.stderr
    where = run(prefix / "venv/bin/python", "-c",
                "import edgeface_cam.config as c; print(c.ASSETS, c.load().gallery_path())",
                env=dict(env, EDGEFACE_CAM_CONFIG=str(prefix / "etc/config.yaml")))
    assert where.stdout.split() == [str(prefix / "src/assets"),
                                    str(prefix / "data/gallery.db")], where.stderr
    assert stat.S_IMODE((prefix / "data").stat().st_mode) == 0o700
    # Nothing outside the prefix.
    assert {p: p.exists() for p in SYSTEM_PATHS} == outside_before
    assert user_exists("edgeface") == user_before

    # A real enrolment through the installed command lands in PREFIX/data.
    enrol = run(command, "enroll", "--name", "Barack Obama", "--images", PHOTO, env=env)
    assert enrol.returncode == 0, enrol.stderr
    db = prefix / "data" / "gallery.db"
    assert gallery_people(db) == ["Barack Obama"]

    # Upgrade: run again. The user's config is kept, the venv reused, the gallery untouched.
    conf = prefix / "etc" / "config.yaml"
    conf.write_text(conf.read_text() + "# changed by the user\n")
    python_inode = (prefix / "venv/bin/python").lstat().st_ino
    r2 = sh("--prefix", prefix, "--no-system", env=env, cwd=tmp_path, timeout=900)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "keeping your" in r2.stdout and "creating the venv" not in r2.stdout
    assert "Python packages up to date" in r2.stdout  # editable: new code needs no pip run
    assert conf.read_text().endswith("# changed by the user\n")
    assert (prefix / "venv/bin/python").lstat().st_ino == python_inode
    listed = run(command, "list", "--json", env=env)
    assert [p["name"] for p in json.loads(listed.stdout)] == ["Barack Obama"], listed.stderr

    # Uninstall: the program goes, the config and the gallery stay.
    u = sh("--prefix", prefix, "--no-system", "--uninstall", env=env, timeout=120)
    assert u.returncode == 0, u.stderr
    assert not (prefix / "venv").exists() and not (prefix / "src").exists()
    assert not command.exists()
    assert conf.is_file() and gallery_people(db) == ["Barack Obama"]
    assert "--purge" in u.stdout  # says how to delete the rest

    p = sh("--prefix", prefix, "--no-system", "--purge", env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert not prefix.exists()


# --- the system install, in a private mount namespace --------------------------------------------
NAMESPACE_SCRIPT = textwrap.dedent(r"""
    # Runs in its own mount namespace: /etc, /var/lib, /var/log and /usr/local/bin are overlays
    # whose changes land in $R/ov, so the machine itself is not touched.
    set -u
    P=$1 R=$2 REPO=$3 PY=$4 PHOTO=$5
    for d in /etc /var/lib /var/log /usr/local/bin; do
      n=$(echo "$d" | tr / _)
      mkdir -p "$R/ov/$n/up" "$R/ov/$n/work"
      mount -t overlay overlay -o "lowerdir=$d,upperdir=$R/ov/$n/up,workdir=$R/ov/$n/work" "$d" \
        || { echo "overlay on $d failed" > "$R/skip"; exit 0; }
    done
    cd /
    step() { local name=$1; shift; "$@" > "$R/$name.out" 2>&1; echo $? > "$R/$name.rc"; }
    cmd=/usr/local/bin/edgeface-cam
    step install env PYTHON="$PY" bash "$REPO/install.sh" --prefix "$P"
    id edgeface > "$R/id"
    stat -c '%a %U %G' /etc/edgeface-cam/config.yaml > "$R/conf.stat"
    stat -c '%a %U %G' /var/lib/edgeface-cam > "$R/data.stat"
    readlink /usr/local/bin/edgeface-cam > "$R/link"
    cp /etc/systemd/system/edgeface-cam.service "$R/unit"
    cp /etc/systemd/system/edgeface-cam@.service "$R/template"
    readlink /etc/systemd/system/multi-user.target.wants/edgeface-cam.service > "$R/wants"
    "$P/venv/bin/python" -c "from edgeface_cam import config; print(config.load().gallery_path())" \
      > "$R/gallery.path"
    step enroll runuser -u edgeface -- "$cmd" enroll --name "Barack Obama" --images "$PHOTO"
    stat -c '%U' /var/lib/edgeface-cam/gallery.db > "$R/gallery.owner"
    echo "# changed by the user" >> /etc/edgeface-cam/config.yaml
    step reinstall env PYTHON="$PY" bash "$REPO/install.sh" --prefix "$P"
    tail -n 1 /etc/edgeface-cam/config.yaml > "$R/conf.tail"
    step list runuser -u edgeface -- "$cmd" list --json
    step doctor "$cmd" doctor
    ls -A /var/lib/edgeface-cam > "$R/data.after_doctor"
    systemctl enable edgeface-cam@door.service > "$R/enable_door.out" 2>&1
    ls /etc/systemd/system/multi-user.target.wants > "$R/wants.door"
    step uninstall bash "$REPO/install.sh" --prefix "$P" --uninstall
    ls -A /var/lib/edgeface-cam > "$R/data.after_uninstall"
    ls -A /etc/edgeface-cam > "$R/conf.after_uninstall"
    for f in "$P" /usr/local/bin/edgeface-cam /etc/systemd/system/edgeface-cam.service \
        /etc/systemd/system/edgeface-cam@.service \
        /etc/systemd/system/multi-user.target.wants/edgeface-cam@door.service; do
      { [ -e "$f" ] || [ -L "$f" ]; } && echo "$f"; done > "$R/left.after_uninstall"
    step purge bash "$REPO/install.sh" --prefix "$P" --purge
    for f in /etc/edgeface-cam /var/lib/edgeface-cam; do [ -e "$f" ] && echo "$f"; done \
      > "$R/left.after_purge"
    id edgeface > /dev/null 2>&1; echo $? > "$R/user.after_purge"
    exit 0
""")


def system_python() -> str | None:
    """An interpreter the service user may run (this machine's python may sit in /root)."""
    for cand in ("/usr/bin/python3", sys.executable):
        ok = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             cand, "-c", "import ensurepip, venv, sys; "
                             "sys.exit(sys.version_info < (3, 10))"],
                            capture_output=True, timeout=30).returncode == 0
        if ok:
            return cand
    return None


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the system install needs root")
@pytest.mark.skipif(not all(shutil.which(t) for t in ("unshare", "runuser", "setpriv")),
                    reason="needs unshare, runuser and setpriv (util-linux)")
def test_system_install_user_config_unit_uninstall_purge(tmp_path):
    py = system_python()
    if py is None:
        pytest.skip("no Python >= 3.10 with venv that an unprivileged user can run")
    if user_exists("edgeface"):
        pytest.skip("this machine already has an edgeface user: not touching it")
    results = tmp_path / "results"
    results.mkdir()
    script = tmp_path / "ns.sh"
    script.write_text(NAMESPACE_SCRIPT)
    # The service user must reach the venv: not under pytest's private (0700) temp folder.
    top = Path(tempfile.mkdtemp(prefix="efc-system-"))
    try:
        top.chmod(0o755)
        prefix = top / "opt"
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash",
                            str(script), str(prefix), str(results), str(ROOT), py, str(PHOTO)],
                           capture_output=True, text=True, timeout=1500,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    if r.returncode != 0 and "unshare" in r.stderr:
        pytest.skip(f"no private mount namespace here: {r.stderr.strip()}")
    if (results / "skip").exists():
        pytest.skip((results / "skip").read_text().strip())

    def read(name: str) -> str:
        return (results / name).read_text().strip()

    def ok(step: str) -> None:
        assert read(f"{step}.rc") == "0", read(f"{step}.out")

    ok("install")
    assert "(video)" in read("id")  # cameras
    assert read("conf.stat") == "640 root edgeface"
    assert read("data.stat") == "700 edgeface edgeface"
    assert read("link") == f"{prefix}/venv/bin/edgeface-cam"
    unit = read("unit")
    assert f"ExecStart={prefix}/venv/bin/edgeface-cam run" in unit
    assert "/opt/edgeface-cam" not in unit
    assert read("wants") == "/etc/systemd/system/edgeface-cam.service"  # enabled
    template = read("template")  # one more service per extra camera, not enabled
    assert f"ExecStart={prefix}/venv/bin/edgeface-cam run" in template
    assert "EDGEFACE_CAM_CONFIG=%E/edgeface-cam/%i.yaml" in template
    assert read("gallery.path") == "/var/lib/edgeface-cam/gallery.db"
    ok("enroll")  # as the service user, while the service could be running
    assert read("gallery.owner") == "edgeface"
    ok("reinstall")
    assert read("conf.tail") == "# changed by the user"
    ok("list")
    assert [p["name"] for p in json.loads(read("list.out"))] == ["Barack Obama"]
    # doctor as root reads the gallery without leaving root-owned WAL files behind.
    # (web-auth.json: the web password install.sh set, kept with the gallery)
    assert read("data.after_doctor").split() == ["gallery.db", "web-auth.json"]
    assert "OK    gallery" in read("doctor.out")
    assert "edgeface-cam@door.service" in read("wants.door").split()  # a user's extra camera
    ok("uninstall")
    assert read("data.after_uninstall").split() == ["gallery.db", "web-auth.json"]
    assert "config.yaml" in read("conf.after_uninstall").split()
    assert read("left.after_uninstall") == ""
    ok("purge")
    assert read("left.after_purge") == ""
    assert read("user.after_purge") != "0"
