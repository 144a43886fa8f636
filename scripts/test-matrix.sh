#!/usr/bin/env bash
# The device half on the library versions the boards have, natively on x86 (fast):
#   np1  numpy<2 and the OpenCV pip picks with it (4.11: Pi OS Bookworm's stack, numpy 1.24 pinned)
#   cv4  numpy 2 with OpenCV 4.x (the last 4.x wheel that installs on numpy 2)
# Each is a venv under .cache/matrix/ (kept between runs; pip runs only when the dependencies or
# the pins change) with the extras install.sh puts on a board (device, mqtt) and the test tools
# (the dev extra: pytest, Starlette's TestClient's HTTP client, ...), and runs the device tests.
# One summary line per venv; exits non-zero when any venv fails.
# Usage: bash scripts/test-matrix.sh [pytest args...]     (EDGEFACE_MATRIX="np1 cv4" picks venvs)
# (The modules run are those that mark tests `device`; pytest args narrow them further with -k.)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

CACHE=${EDGEFACE_MATRIX_CACHE:-$PWD/.cache/matrix}
PY=${PYTHON:-python3}
declare -A SPECS=(
  [np1]='numpy<2'
  [cv4]='numpy>=2 opencv-python<5'
)
NAMES=${EDGEFACE_MATRIX:-np1 cv4}
PIP=(--disable-pip-version-check --no-input --progress-bar off -q)
EXTRAS=device,mqtt,dev  # as install.sh installs on a board (with --dev)

# Build (or reuse) the venv NAME with the pins SPEC; prints nothing on success but pip's errors.
ensure_venv() {
  local name=$1 spec=$2 dir=$CACHE/$1 stamp deps
  stamp=$dir/.edgeface-matrix-deps
  deps=$(cat setup.py pyproject.toml; echo "$spec [$EXTRAS]"; "$PY" -V 2>&1)
  deps=$(printf '%s' "$deps" | sha256sum | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$deps" ]; then return 0; fi
  echo "== $name: building $dir ($spec)"
  rm -rf "$dir"
  "$PY" -m venv "$dir" || return 1
  # shellcheck disable=SC2086  # the spec is a list of requirement words
  "$dir/bin/python" -m pip install "${PIP[@]}" -e ".[$EXTRAS]" $spec \
    2> >(grep -v "is ignored: it is neither a file" >&2) || return 1
  echo "$deps" > "$stamp"
}

versions() {
  "$1/bin/python" - <<'EOF'
import platform, cv2, numpy
from importlib.metadata import version
print(f"python {platform.python_version()}, numpy {numpy.__version__}, "
      f"OpenCV {cv2.__version__} (opencv-python {version('opencv-python')}), "
      f"ai-edge-litert {version('ai-edge-litert')}")
EOF
}

# Only the modules that hold device tests are collected: the others may import what these venvs
# lack (torch, the web stack), and a collection error would stop the run.
mapfile -t FILES < <(grep -l 'pytest.mark.device' tests/test_*.py)
((${#FILES[@]})) || { echo "test-matrix: no test module is marked device" >&2; exit 1; }
summary=()
failed=0
for name in $NAMES; do
  spec=${SPECS[$name]:-}
  [ -n "$spec" ] || { echo "test-matrix: unknown venv '$name' (known: ${!SPECS[*]})" >&2; exit 2; }
  start=$(date +%s)
  if ! ensure_venv "$name" "$spec"; then
    summary+=("matrix $name: FAIL (pip could not install $spec)")
    failed=1
    continue
  fi
  ver=$(versions "$CACHE/$name" 2>&1 | tail -n 1)
  echo "== $name: pytest -m device ($ver)"
  # From the checkout, so the editable install and tests/ are this tree's.
  "$CACHE/$name/bin/python" -m pytest -q -p no:cacheprovider -m device "${FILES[@]}" "$@"
  rc=$?
  t=$(( $(date +%s) - start ))
  if ((rc == 0)); then
    summary+=("matrix $name: ok in ${t}s: $ver")
  else
    summary+=("matrix $name: FAIL (pytest exit $rc) in ${t}s: $ver")
    failed=1
  fi
done
printf '%s\n' "${summary[@]}"
exit "$failed"
