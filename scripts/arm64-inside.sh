#!/usr/bin/env bash
# Run by scripts/test-arm64.sh inside the arm64 root (the checkout at /work/main, shared/ at
# /work/shared): (a) the README's quick start in a plain venv, (b) Pi OS's way through
# install.sh (EDGEFACE_PIOS=1: its Pi branch, over Debian's python3-numpy), then
# scripts/device-checks.sh on each. Writes OUT/summary.txt (one line) and OUT/<kind>.json.
# Emulation is 50-100x slower than native (the whole `pytest -m device` would take hours), so
# only the device tests of the modules below that are not marked slow run here: quick computation
# (numpy, OpenCV, LiteRT), no timing. The x86 matrix runs every device test on numpy 1.x/OpenCV 4.
# Usage: arm64-inside.sh OUT ["TEST FILES..."]
set -uo pipefail
OUT=$1
# (Detection on every fixture photo is compared with x86 by cross_cpu.py; test_detect's tiling
# tests take minutes each emulated.)
DEFAULT_TESTS="tests/test_align.py tests/test_recognize.py tests/test_selftest.py tests/test_track.py
  tests/test_config.py tests/test_device_imports.py"
read -r -d "" -a TESTS <<<"${2:-$DEFAULT_TESTS}" || true
cd /work/main || exit 1
PREFIX=/opt/edgeface-pios
PIP=(--disable-pip-version-check --no-input --progress-bar off -q)
PYTEST_ARGS=(-m "device and not slow" "${TESTS[@]}")
summary=()
failed=0
note() { printf '== [inside] %s\n' "$*"; }

cpu=$(python3 - <<'EOF'
import ctypes
getauxval = ctypes.CDLL(None).getauxval
getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
hwcap = getauxval(16)  # AT_HWCAP: what the emulated core offers
bits = {1: "fp", 2: "asimd", 8: "aes", 256: "atomics", 1 << 20: "asimddp", 1 << 22: "sve"}
print("hwcap " + "+".join(n for b, n in bits.items() if hwcap & b))
EOF
)
note "$(uname -m), python $(python3 -V 2>&1 | cut -d' ' -f2), $cpu"

# (a) The README's quick start, kept between runs while the dependencies are unchanged, plus the
# test runner (the tests are not part of the quick start).
t0=$(date +%s)
deps=$(cat setup.py pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.edgeface-deps 2>/dev/null)" = "$deps" ] && [ -x .venv/bin/edgeface-cam ]; then
  note "quick start: .venv up to date"
  ok=1
else
  note "quick start: python3 -m venv .venv && .venv/bin/pip install -e '.[device]'"
  rm -rf .venv
  if python3 -m venv .venv && .venv/bin/pip install "${PIP[@]}" -e '.[device]' &&
     .venv/bin/pip install "${PIP[@]}" pytest pytest-timeout; then
    echo "$deps" > .venv/.edgeface-deps
    ok=1
  else
    ok=0
  fi
fi
if ((ok)); then
  summary+=("quickstart install ok $(( $(date +%s) - t0 ))s")
  line=$(bash scripts/device-checks.sh quickstart .venv/bin/python .venv/bin/edgeface-cam "$OUT" \
         "${PYTEST_ARGS[@]}") || failed=1
  summary+=("$line")
else
  summary+=("quickstart install FAIL"); failed=1
fi

# (b) Pi OS's way: install.sh itself, user install, its Pi branch (system site-packages, numpy
# pinned to Debian's python3-numpy); --dev brings pytest. install.sh skips pip when unchanged.
t0=$(date +%s)
note "Pi OS: EDGEFACE_PIOS=1 ./install.sh --no-system --prefix $PREFIX --dev"
if EDGEFACE_PIOS=1 bash install.sh --no-system --prefix "$PREFIX" --dev > "$OUT/pios-install.log" 2>&1; then
  summary+=("pios install ok $(( $(date +%s) - t0 ))s")
  line=$(bash scripts/device-checks.sh pios "$PREFIX/venv/bin/python" "$PREFIX/bin/edgeface-cam" \
         "$OUT" "${PYTEST_ARGS[@]}") || failed=1
  summary+=("$line")
else
  summary+=("pios install FAIL ($(tail -n 1 "$OUT/pios-install.log"))"); failed=1
fi

(IFS=';'; echo "$cpu; ${summary[*]}") > "$OUT/summary.txt"
cat "$OUT/summary.txt"
exit "$failed"
