#!/usr/bin/env bash
# The device checks for one installed venv (scripts/test-arm64.sh runs them on each arm64 install;
# they run natively too): the model's self-test, `doctor --no-camera`, enrol + identify on the
# fixture people and scenes (scripts/cross_cpu.py dump, which also writes OUT/TAG.json for the
# cross-CPU comparison), the demo clip cut short, and the tests marked `device`.
# Usage: scripts/device-checks.sh TAG PYTHON COMMAND OUT [pytest args...]
#   PYTHON: the venv's python; COMMAND: its edgeface-cam; OUT: a folder for TAG-*.log, TAG.json.
# Environment: EDGEFACE_SHARED (default ../shared), DEMO_FRAMES (default 30).
# Prints one line "TAG: step ok|FAIL ..." and exits non-zero when any step failed.
set -uo pipefail
TAG=$1 PY=$2 CMD=$3 OUT=$4
shift 4
abs() { printf '%s/%s' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; }  # keeps venv links
PY=$(abs "$PY") CMD=$(abs "$CMD")
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
SHARED=$(cd "${EDGEFACE_SHARED:-$REPO/../shared}" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# A home of its own: no user config or gallery leaks in, and none is written.
HOME_DIR=$(mktemp -d)
trap 'rm -rf "$HOME_DIR"' EXIT
results=()
failed=0

step() {  # step NAME COMMAND...: run it from / with the private home, log, time, record
  local name=$1 t0 rc
  shift
  t0=$(date +%s)
  (cd / && env -u EDGEFACE_CAM_CONFIG HOME="$HOME_DIR" "$@") > "$OUT/$TAG-$name.log" 2>&1
  rc=$?
  if ((rc == 0)); then
    results+=("$name ok $(( $(date +%s) - t0 ))s")
  else
    results+=("$name FAIL(rc $rc, $OUT/$TAG-$name.log: $(grep -v '^\s*$' "$OUT/$TAG-$name.log" | tail -n 1 | cut -c1-160))")
    failed=1
  fi
}

step self-test "$PY" -c "from edgeface_cam.embed import Embedder; e = Embedder(); print(e.name, 'on', e.runtime, 'cosine', round(e.check(), 5))"
step doctor "$CMD" doctor --no-camera
step identify "$PY" "$REPO/scripts/cross_cpu.py" dump --shared "$SHARED" --out "$OUT/$TAG.json"
step demo "$CMD" demo --no-preview --max-frames "${DEMO_FRAMES:-30}"
# From the checkout (tests/ and its conftest); the shared folder as the tests look for it.
t0=$(date +%s)
env -u EDGEFACE_CAM_CONFIG EDGEFACE_SHARED="$SHARED" HOME="$HOME_DIR" "$PY" -m pytest -q -p no:cacheprovider -m device "$@" \
  > "$OUT/$TAG-pytest.log" 2>&1
rc=$?
last=$(grep -E '(passed|failed|error|no tests ran)' "$OUT/$TAG-pytest.log" | tail -n 1 | tr -d '=' | xargs)
if ((rc == 0)); then
  results+=("pytest ok ($last) $(( $(date +%s) - t0 ))s")
else
  results+=("pytest FAIL(rc $rc: $last)")
  failed=1
fi

versions=$("$PY" -c "import platform, numpy, cv2; print(f'python {platform.python_version()}, numpy {numpy.__version__}, OpenCV {cv2.__version__}')" 2>&1 | tail -n 1)
(IFS=','; echo "$TAG [$versions]: ${results[*]}")
exit "$failed"
