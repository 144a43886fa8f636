#!/usr/bin/env bash
# install.sh: install edgeface-cam on a board (Raspberry Pi OS, Jetson, Debian/Ubuntu) as a
# systemd service. Idempotent: run it again to upgrade; the config and the gallery are kept.
# Usage: sudo ./install.sh [--prefix DIR] [--no-service] [--no-system] [--dev]
#        sudo ./install.sh --uninstall [--purge]
set -euo pipefail

NAME=edgeface-cam
USER_NAME=edgeface
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# What the installed program needs from the checkout (the models in assets/ included).
PAYLOAD=(setup.py pyproject.toml README.md LICENSE config.yaml install.sh edgeface_cam training
         assets systemd docs)

PREFIX=/opt/$NAME
SERVICE=1
SYSTEM=1
DEV=0
ACTION=install
PURGE=0
PY=${PYTHON:-python3}

usage() {
  cat <<EOF
Install edgeface-cam: a Python venv under PREFIX, a system user '$USER_NAME', the config in
/etc/$NAME/config.yaml (kept on upgrade), the gallery folder /var/lib/$NAME (0700), the command
/usr/local/bin/$NAME and the systemd unit $NAME.service (enabled and started), plus
$NAME@.service for more cameras (systemctl enable --now $NAME@door: /etc/$NAME/door.yaml).

Usage: sudo ./install.sh [options]

Options:
  --prefix DIR   where the program goes (default: /opt/$NAME): DIR/src (a copy of this
                 checkout), DIR/venv (Python packages)
  --no-service   do not install the systemd unit (everything else as usual)
  --no-system    touch nothing outside PREFIX, no root needed: no user, no apt packages, no
                 unit; config in PREFIX/etc/config.yaml, gallery in PREFIX/data, the command
                 is PREFIX/bin/$NAME (implies --no-service)
  --dev          also install the test tools (the [dev] extra)
  --uninstall    remove the service, the command and PREFIX's program files; keep the config,
                 the gallery and the user
  --purge        with --uninstall (implied): also delete the config, the gallery, the logs and
                 the user. The enrolled people are lost.
  -h, --help     this help

Environment: PYTHON (default python3) is the interpreter for the venv (3.10 or newer);
EDGEFACE_PIOS=1 installs as on Raspberry Pi OS (system site-packages, the system's numpy pinned).
Use the same --prefix/--no-system for --uninstall as for the install.
EOF
}

say() { printf '== %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

while (($#)); do
  case "$1" in
    --prefix) (($# >= 2)) || die "--prefix needs a folder"; PREFIX=$2; shift ;;
    --prefix=*) PREFIX=${1#--prefix=} ;;
    --no-service) SERVICE=0 ;;
    --no-system) SYSTEM=0; SERVICE=0 ;;
    --dev) DEV=1 ;;
    --uninstall) ACTION=uninstall ;;
    --purge) ACTION=uninstall; PURGE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

# An absolute path of plain characters: it is written into sed expressions, the unit file and
# shell wrappers, and removed with rm -rf on --uninstall.
PREFIX=${PREFIX%/}
[[ $PREFIX =~ ^/[A-Za-z0-9._+/-]+$ ]] || die "--prefix must be an absolute path of letters, digits and ._+-/ (got '$PREFIX')"
case "$PREFIX" in
  /|/bin|/boot|/dev|/etc|/home|/lib|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/usr/local|/var)
    die "--prefix $PREFIX is a system folder; give a folder of its own, e.g. /opt/$NAME" ;;
esac

VENV=$PREFIX/venv
SRC=$PREFIX/src
if ((SYSTEM)); then
  CONF_DIR=/etc/$NAME
  DATA_DIR=/var/lib/$NAME
  LOG_DIR=/var/log/$NAME
  COMMAND=/usr/local/bin/$NAME
  UNIT=/etc/systemd/system/$NAME.service
  TEMPLATE=/etc/systemd/system/$NAME@.service
else
  CONF_DIR=$PREFIX/etc
  DATA_DIR=$PREFIX/data
  LOG_DIR=
  COMMAND=$PREFIX/bin/$NAME
  UNIT=
  TEMPLATE=
fi
CONF=$CONF_DIR/config.yaml

if ((SYSTEM)) && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo ./install.sh ...), or add --no-system --prefix DIR for a user install"
fi
systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# --- uninstall -------------------------------------------------------------------------------
uninstall() {
  if ((SYSTEM)); then
    if [ -f "$TEMPLATE" ]; then
      say "removing the per-camera services"
      for link in /etc/systemd/system/*.wants/"$NAME"@*.service; do
        [ -L "$link" ] || continue
        if systemd_running; then systemctl disable --now "$(basename "$link")" || true; fi
        rm -f "$link"
      done
      rm -f "$TEMPLATE"
    fi
    if [ -f "$UNIT" ]; then
      say "removing the service"
      if systemd_running; then systemctl disable --now "$NAME.service" || true
      else systemctl disable "$NAME.service" 2>/dev/null || true; fi
      rm -f "$UNIT"
    fi
    if systemd_running; then systemctl daemon-reload; fi
    if [ -L "$COMMAND" ] && [[ $(readlink "$COMMAND") == "$PREFIX"/* ]]; then rm -f "$COMMAND"; fi
  fi
  say "removing $SRC, $VENV"
  rm -rf "$VENV" "$SRC" "${PREFIX:?}/bin" "$PREFIX/constraints.txt"
  if ((PURGE)); then
    say "purging the config, the gallery and the logs"
    rm -rf "$CONF_DIR" "$DATA_DIR" ${LOG_DIR:+"$LOG_DIR"}
    if ((SYSTEM)) && id "$USER_NAME" >/dev/null 2>&1; then userdel "$USER_NAME" || true; fi
  fi
  rmdir "$PREFIX" 2>/dev/null || true
  if ((PURGE)); then
    say "edgeface-cam is uninstalled and its data deleted"
  else
    local again="$0 --purge --prefix $PREFIX"
    ((SYSTEM)) || again+=" --no-system"
    say "edgeface-cam is uninstalled; kept: $CONF (config) and $DATA_DIR (gallery)." \
        "Delete them with: $again"
  fi
}
if [ "$ACTION" = uninstall ]; then uninstall; exit 0; fi

# --- checks: OS, architecture, Python --------------------------------------------------------
PLATFORM=debian
OS_NAME=unknown
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  OS_NAME=$(. /etc/os-release; echo "${PRETTY_NAME:-$ID}")
  # shellcheck disable=SC1091
  OS_LIKE=$(. /etc/os-release; echo "${ID:-} ${ID_LIKE:-}")
  [[ $OS_LIKE == *debian* || $OS_LIKE == *ubuntu* || $OS_LIKE == *raspbian* ]] || PLATFORM=other
fi
# EDGEFACE_PIOS=1 takes the Pi OS branch on any Debian (scripts/test-arm64.sh, in an arm64 root).
if [ -f /etc/rpi-issue ] || grep -qs "Raspberry Pi" /proc/device-tree/model ||
   [ "${EDGEFACE_PIOS:-0}" = 1 ]; then
  PLATFORM=pi
elif [ -f /etc/nv_tegra_release ]; then
  PLATFORM=jetson
fi
ARCH=$(uname -m)
case "$ARCH" in
  x86_64|aarch64) ;;
  armv7l|armv6l) die "this is a 32-bit OS ($ARCH); LiteRT and OpenCV publish no 32-bit wheels: install the 64-bit Raspberry Pi OS" ;;
  *) warn "untested architecture $ARCH" ;;
esac
say "platform: $PLATFORM ($OS_NAME, $ARCH)"
if ((SYSTEM)) && [ "$PLATFORM" = other ]; then
  die "$OS_NAME is not Debian-based (no apt): install Python 3.10+, python3-venv and libGL by hand and use --no-system"
fi

# System packages, each with a probe that says whether it is already there (fast and idempotent:
# apt runs only when something is missing; the probe, not dpkg, so renamed packages such as
# libglib2.0-0t64 on Trixie count).
# (Read into a variable: `ldconfig -p | grep -q` fails under pipefail when grep exits early.)
LIBS=$("$(command -v ldconfig || echo /sbin/ldconfig)" -p 2>/dev/null || true)
have_lib() { [[ $LIBS == *"$1"* ]]; }
APT_MISSING=()
if ! command -v "$PY" >/dev/null; then
  APT_MISSING+=(python3 python3-venv)
elif ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
  APT_MISSING+=(python3-venv)
fi
have_lib libGL.so.1 || APT_MISSING+=(libgl1)                 # OpenCV's GUI build (preview)
if ! have_lib libgthread-2.0.so.0; then
  if apt-cache show libglib2.0-0t64 >/dev/null 2>&1; then APT_MISSING+=(libglib2.0-0t64)
  else APT_MISSING+=(libglib2.0-0); fi
fi
# The Pi camera goes through libcamera's Python bindings, only packaged by apt (hence the venv
# with --system-site-packages below). --no-install-recommends: no desktop stack on Pi OS Lite.
if [ "$PLATFORM" = pi ] && ! "$PY" -c "import picamera2" 2>/dev/null; then
  APT_MISSING+=(python3-picamera2)
fi
if ((${#APT_MISSING[@]})); then
  if ((SYSTEM)); then
    say "apt-get install ${APT_MISSING[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_MISSING[@]}" >/dev/null
  else
    warn "missing system packages (--no-system installs none): ${APT_MISSING[*]}; install them with: sudo apt-get install ${APT_MISSING[*]}"
  fi
fi

command -v "$PY" >/dev/null || die "no $PY: install Python 3.10 or newer (sudo apt-get install python3)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); edgeface-cam needs 3.10 or newer (set PYTHON=...)"
"$PY" -c "import ensurepip, venv" 2>/dev/null ||
  die "$PY cannot create virtual environments: sudo apt-get install python3-venv"
PY_VERSION=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# --- the service user ------------------------------------------------------------------------
if ((SYSTEM)); then
  if ! id "$USER_NAME" >/dev/null 2>&1; then
    say "creating the system user $USER_NAME"
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "edgeface-cam service" "$USER_NAME"
  fi
  # video: cameras (/dev/video*, /dev/media*, the Pi's /dev/dma_heap); render: GPU nodes.
  for g in video render; do
    if getent group "$g" >/dev/null; then usermod -a -G "$g" "$USER_NAME"; fi
  done
fi

# --- the program: a copy of this checkout under PREFIX, installed editable into a venv -------
# A copy, so that the service never reads from a home folder (ProtectHome=) and the checkout
# can go; editable, because the models in assets/ sit beside the package (config.ASSETS),
# which a wheel install would leave behind.
say "copying the program to $SRC"
mkdir -p "$PREFIX"
rm -rf "$SRC.new"
mkdir -p "$SRC.new"
present=()
for p in "${PAYLOAD[@]}"; do [ -e "$REPO/$p" ] && present+=("$p"); done
tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - "${present[@]}" |
  tar -C "$SRC.new" -xf -
rm -rf "$SRC"
mv "$SRC.new" "$SRC"

# On the Pi the venv sees the system's packages (picamera2, libcamera), and the system numpy is
# pinned: picamera2's compiled helpers are built against it (numpy 1.24 on Bookworm; a numpy 2
# in the venv would break them). Elsewhere the venv is sealed from the system.
SITE=0
if [ "$PLATFORM" = pi ]; then SITE=1; fi
venv_ok() {
  [ -x "$VENV/bin/python" ] || return 1
  [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PY_VERSION" ] || return 1
  local want=false
  if ((SITE)); then want=true; fi
  grep -q "^include-system-site-packages = $want" "$VENV/pyvenv.cfg"
}
if ! venv_ok; then
  say "creating the venv $VENV (Python $PY_VERSION$( ((SITE)) && echo ', with system site-packages'))"
  rm -rf "$VENV"
  if ((SITE)); then "$PY" -m venv --system-site-packages "$VENV"; else "$PY" -m venv "$VENV"; fi
fi
PIP_ARGS=(--disable-pip-version-check --no-input --progress-bar off -q)
: > "$PREFIX/constraints.txt"
if ((SITE)); then
  sys_numpy=$("$PY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
  if [ -n "$sys_numpy" ]; then echo "numpy==$sys_numpy" > "$PREFIX/constraints.txt"; fi
fi
# paho-mqtt (the mqtt extra) is pure Python and small: MQTT to Home Assistant works out of the box.
EXTRAS=device,mqtt
if ((DEV)); then EXTRAS+=,dev; fi
# The install is editable, so new code needs no pip run: pip runs only when the dependencies
# (setup.py, the extras, the numpy pin) differ from the last successful run's.
STAMP=$VENV/.edgeface-cam-deps
deps=$(cat "$SRC/setup.py" "$SRC/pyproject.toml" "$PREFIX/constraints.txt"; echo "$EXTRAS")
deps=$(printf '%s' "$deps" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" = "$deps" ]; then
  say "Python packages up to date"
else
  say "pip install -e ${SRC}[$EXTRAS] (downloads OpenCV and LiteRT the first time)"
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" -c "$PREFIX/constraints.txt" -e "${SRC}[$EXTRAS]"
  echo "$deps" > "$STAMP"
fi
"$VENV/bin/python" -m compileall -q "$SRC/edgeface_cam" >/dev/null || true  # the unit's /opt is read-only
# From / so that a checkout in the current folder cannot stand in for the installed package.
if ! err=$(cd / && "$VENV/bin/python" -c "import cv2; from edgeface_cam.runtime import interpreter_class; interpreter_class()" 2>&1); then
  die "the installed program does not import: $(printf '%s' "$err" | tail -n 1) (missing libGL? sudo apt-get install libgl1 libglib2.0-0)"
fi
(cd / && "$VENV/bin/$NAME" --help >/dev/null) || die "$VENV/bin/$NAME --help failed"

# --- config and data ---------------------------------------------------------------------------
mkdir -p "$CONF_DIR"
# The repo's config.yaml with the gallery moved to DATA_DIR.
sed -E "/^gallery:/,/^[^[:space:]#]/ s|^([[:space:]]+path:).*|\1 $DATA_DIR/gallery.db|" \
  "$SRC/config.yaml" > "$CONF_DIR/config.yaml.default"
if [ -f "$CONF" ]; then
  say "keeping your $CONF (this version's defaults: $CONF.default)"
else
  say "writing $CONF"
  cp "$CONF_DIR/config.yaml.default" "$CONF"
fi
if ! err=$(cd / && "$VENV/bin/python" -c "import sys; from edgeface_cam import config; print(config.load(sys.argv[1]).gallery_path())" "$CONF" 2>&1); then
  warn "$CONF does not load with this version: $(printf '%s' "$err" | tail -n 1)"
fi
mkdir -p "$DATA_DIR"
chmod 0700 "$DATA_DIR"
# The web UI's admin password: a random one on the first install, printed once at the end (until
# one exists the web UI listens on 127.0.0.1 only). Kept on upgrade; `edgeface-cam passwd`
# changes it. Stored as a scrypt hash in $DATA_DIR/web-auth.json (0600).
WEB_PASSWORD=""
if ! grep -qs '"password": "scrypt' "$DATA_DIR/web-auth.json"; then
  WEB_PASSWORD=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(12))')
  printf '%s\n' "$WEB_PASSWORD" | (cd / && "$VENV/bin/$NAME" passwd --password-stdin \
    --config "$CONF" --db "$DATA_DIR/gallery.db" >/dev/null) ||
    { warn "could not set the web password: set one with $NAME passwd"; WEB_PASSWORD=""; }
fi
if ((SYSTEM)); then
  chown root:"$USER_NAME" "$CONF" "$CONF_DIR/config.yaml.default"
  chmod 0640 "$CONF" "$CONF_DIR/config.yaml.default"
  # The gallery and its WAL files must all be the service user's, or SQLite cannot open them.
  chown -R "$USER_NAME:$USER_NAME" "$DATA_DIR"
fi

# --- the command -------------------------------------------------------------------------------
if ((SYSTEM)); then
  ln -sfn "$VENV/bin/$NAME" "$COMMAND"
else
  mkdir -p "$PREFIX/bin"
  cat > "$COMMAND" <<EOF
#!/bin/sh
# edgeface-cam installed by install.sh --no-system: this install's config unless one is given.
export EDGEFACE_CAM_CONFIG="\${EDGEFACE_CAM_CONFIG:-$CONF}"
exec "$VENV/bin/$NAME" "\$@"
EOF
  chmod 0755 "$COMMAND"
fi

# --- the service -------------------------------------------------------------------------------
if ((SERVICE)); then
  say "installing $UNIT"
  sed "s|/opt/$NAME|$PREFIX|g" "$SRC/systemd/$NAME.service" > "$UNIT.new"
  chmod 0644 "$UNIT.new"
  mv "$UNIT.new" "$UNIT"
  # The same unit per extra camera (not enabled): docs/deploy.md, "Several cameras".
  sed -e "s|/opt/$NAME|$PREFIX|g" -f "$SRC/systemd/instance-unit.sed" \
    "$SRC/systemd/$NAME.service" > "$TEMPLATE.new"
  chmod 0644 "$TEMPLATE.new"
  mv "$TEMPLATE.new" "$TEMPLATE"
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable "$NAME.service" >/dev/null 2>&1
    # restart, not start: an upgrade must run the new code.
    systemctl restart "$NAME.service" || warn "the service did not start: journalctl -u $NAME -e"
    say "service enabled and started: systemctl status $NAME; journalctl -u $NAME -f"
  else
    systemctl enable "$NAME.service" >/dev/null 2>&1 || warn "could not enable $NAME.service"
    say "systemd is not running here: the unit is installed and starts at the next boot"
  fi
fi

say "done: $COMMAND (config $CONF, gallery $DATA_DIR). Check the board with: $COMMAND doctor"
if [ -n "$WEB_PASSWORD" ]; then
  say "web UI: http://$(hostname 2>/dev/null || echo localhost):8080  password: $WEB_PASSWORD"
  say "(shown only this once; change it with: $COMMAND passwd)"
fi
