#!/usr/bin/env bash
# Set up a development environment in .venv (idempotent) and run the linter and the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use: a virtual display for the preview, an MQTT broker, systemd-analyze,
# and Debian's chromium for the web UI's browser test (Playwright drives it; it downloads no
# browser of its own).
APT_PKGS=(xvfb x11-apps imagemagick libgl1 libglib2.0-0 mosquitto systemd shellcheck chromium)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: missing system packages (tests that need them will fail): ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# torch pinned to the build this project is tested with (CPU use; see README 'Training').
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
if ! "$VPY" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "== pip install $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$VPY" -m pip install -q $TORCH_SPEC
fi
echo "== pip install -e .[device,mqtt,train,export,dev]"
"$VPY" -m pip install -q -e ".[device,mqtt,train,export,dev]"

echo "== ruff"
"$VPY" -m ruff check .
echo "== pytest"
exec "$VPY" -m pytest -q -p no:cacheprovider "$@"
