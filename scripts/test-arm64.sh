#!/usr/bin/env bash
# The device half on an emulated arm64 CPU (qemu-user + binfmt_misc) in a Debian root: the
# README's quick start and Pi OS's install.sh way, each checked by scripts/device-checks.sh, and
# the results compared with the same library versions on this x86 CPU (scripts/cross_cpu.py).
#
# Usage: sudo bash scripts/test-arm64.sh [bookworm|trixie]      (default bookworm)
#   bookworm = Python 3.11 and numpy 1.24 (Pi OS Bookworm); trixie = Python 3.13, numpy 2.2.
# Environment:
#   QEMU_CPU             the emulated core (default cortex-a72, the Pi 4's; cortex-a76 = Pi 5).
#                        Not qemu's default 'max': its extra vector units miscompute numpy there.
#   EDGEFACE_ARM64_CACHE where the roots, venvs and pip caches are kept (default .cache/arm64)
#   EDGEFACE_SHARED      the shared/ folder with the fixtures (default ../shared)
#   DEBIAN_MIRROR        (default http://deb.debian.org/debian)
#   EDGEFACE_ARM64_TESTS the test files run emulated (default: scripts/arm64-inside.sh's list)
# The first run builds the root (debootstrap, ~4 min) and the venvs; later runs reuse them.
# Prints one summary line; exits non-zero on any failure. Logs and results: $CACHE/results-*/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
SUITE=${1:-bookworm}
export QEMU_CPU=${QEMU_CPU:-cortex-a72}
CACHE=${EDGEFACE_ARM64_CACHE:-$REPO/.cache/arm64}
SHARED=${EDGEFACE_SHARED:-$REPO/../shared}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
START=$(date +%s)

die() { printf 'test-arm64: error: %s\n' "$*" >&2; exit 1; }
say() { printf '== [arm64 %s] %s\n' "$SUITE" "$*"; }

case "$SUITE" in
  bookworm) GLIB=libglib2.0-0 ;;
  trixie) GLIB=libglib2.0-0t64 ;;
  *) die "unknown suite '$SUITE' (bookworm or trixie)" ;;
esac
[ -d "$SHARED/fixtures" ] || die "no fixtures at $SHARED/fixtures (set EDGEFACE_SHARED)"
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts): sudo bash $0 $SUITE"

# --- the host's tools: qemu-user-static, binfmt_misc, debootstrap ---------------------------
BINFMT=/proc/sys/fs/binfmt_misc
if ! command -v debootstrap >/dev/null || [ ! -e /usr/share/binfmts/qemu-aarch64 ]; then
  if command -v apt-get >/dev/null; then
    say "apt-get install qemu-user-static binfmt-support debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq qemu-user-static binfmt-support debootstrap; } \
      >/dev/null || die "apt-get could not install qemu-user-static binfmt-support debootstrap"
  fi
fi
command -v debootstrap >/dev/null ||
  die "debootstrap is not installed (apt-get install debootstrap qemu-user-static binfmt-support)"
if [ ! -e "$BINFMT/status" ]; then
  mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null ||
    die "binfmt_misc is not mounted and cannot be (mount -t binfmt_misc binfmt_misc $BINFMT: a container without that right cannot run arm64 programs)"
fi
if [ ! -e "$BINFMT/qemu-aarch64" ] && command -v update-binfmts >/dev/null; then
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
grep -qs '^enabled' "$BINFMT/qemu-aarch64" ||
  die "binfmt_misc has no enabled qemu-aarch64 entry (apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-aarch64)"
grep -qs '^flags:.*F' "$BINFMT/qemu-aarch64" ||
  die "the qemu-aarch64 binfmt entry lacks the F (fix binary) flag that a chroot needs: use Debian's qemu-user-static"

# --- the root: debootstrap once, then reused ---------------------------------------------------
# python3-numpy is what Pi OS's venv sees through --system-site-packages (install.sh pins it);
# libgl1 and glib are what opencv-python's GUI build loads.
ROOT=$CACHE/$SUITE
PKGS=python3,python3-venv,python3-numpy,libgl1,$GLIB,ca-certificates
ROOT_STAMP=$ROOT/.edgeface-root
if [ "$(cat "$ROOT_STAMP" 2>/dev/null)" != "$PKGS" ]; then
  say "debootstrap --arch=arm64 $SUITE (once; kept in $ROOT)"
  rm -rf "$ROOT.tmp"
  mkdir -p "$CACHE"
  debootstrap --arch=arm64 --variant=minbase --include="$PKGS" "$SUITE" "$ROOT.tmp" "$MIRROR" \
    > "$CACHE/debootstrap-$SUITE.log" 2>&1 ||
    die "debootstrap failed (see $CACHE/debootstrap-$SUITE.log: $(tail -n 1 "$CACHE/debootstrap-$SUITE.log"))"
  rm -rf "$ROOT"
  mv "$ROOT.tmp" "$ROOT"
  echo "$PKGS" > "$ROOT_STAMP"
fi
# The root uses this machine's network: its name servers and the CAs it trusts (a TLS-inspecting
# proxy's included); pip is told to use that bundle (PIP_CERT below), not its own.
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
if [ -s "$HOST_CA" ]; then cp "$HOST_CA" "$ROOT/etc/ssl/certs/ca-certificates.crt"; fi

# --- the checkout and the scripts go in; shared/ is bind-mounted read-only ----------------------
# /work/main keeps only its .venv (the quick start's, reused when the dependencies are unchanged).
W=$ROOT/work/main
mkdir -p "$W" "$ROOT/work/shared" "$ROOT/work/out"
find "$W" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
rm -rf "$ROOT/work/out"/*
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$REPO" ls-files -z -co --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar -C "$REPO" --null -T - -cf - | tar -C "$W" -xf -
else
  tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=.cache --exclude=__pycache__ -cf - . |
    tar -C "$W" -xf -
fi

# --- x86 twins: the same library versions as each arm64 venv, on this CPU -------------------
# (after the arm64 install, which decides the versions; built and kept under the cache). The
# root's Python version where this machine has it (python3.13 for trixie), else python3; where a
# pinned numpy has no wheel for that Python, the newest one that has (said in the verdict).
x86_twin() {  # x86_twin NAME PYVER "numpy==A opencv-python==B ai-edge-litert==C" -> venv path
  local dir=$CACHE/x86-$SUITE-$1 py pins=$3 deps
  py=python$2
  "$py" -c '' 2>/dev/null || py=${PYTHON:-python3}
  deps=$(cat "$REPO/setup.py" "$REPO/pyproject.toml"; echo "$pins"; "$py" -V 2>&1)
  deps=$(printf '%s' "$deps" | sha256sum | cut -d' ' -f1)
  [ "$(cat "$dir/.edgeface-deps" 2>/dev/null)" = "$deps" ] && { echo "$dir"; return 0; }
  rm -rf "$dir"
  "$py" -m venv "$dir" >&2 || return 1
  local pip=("$dir/bin/python" -m pip install -q --disable-pip-version-check -e "${REPO}[device]")
  # shellcheck disable=SC2086
  if ! "${pip[@]}" $pins 2> >(grep -v "is ignored: it is neither a file" >&2) >&2; then
    local rest
    # shellcheck disable=SC2086
    rest=$(printf '%s\n' $pins | grep -v '^numpy==' | xargs)
    # shellcheck disable=SC2086
    "${pip[@]}" $rest 2> >(grep -v "is ignored: it is neither a file" >&2) >&2 || return 1
    echo "x86 numpy $("$dir/bin/python" -c 'import numpy; print(numpy.__version__)')" > "$dir/.edgeface-note"
  fi
  echo "$deps" > "$dir/.edgeface-deps"
  echo "$dir"
}

# --- the board's CPU as programs see it --------------------------------------------------------
# qemu-user shows the host's /proc/cpuinfo, and the root has no /sys: XNNPACK's cpuinfo then gives
# up ("Error in cpuinfo: failed to parse ...") and LiteRT runs its reference kernels instead of
# the XNNPACK ones a board runs. Binding the host's /sys is worse: XNNPACK sees x86 CPUs and the
# emulated process segfaults. So the root gets what the board's kernel would show: a
# /proc/cpuinfo naming the emulated core (its MIDR part number) and /sys/devices/system/cpu.
FAKE=$CACHE/cpu-$QEMU_CPU
rm -rf "$FAKE"
case "$QEMU_CPU" in  # part number; Features as qemu's model of the core (cpuinfo reads HWCAP)
  cortex-a53) PART=0xd03 FEAT="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid" ;;
  cortex-a72) PART=0xd08 FEAT="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid" ;;
  cortex-a76) PART=0xd0b FEAT="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
  neoverse-n1) PART=0xd0c FEAT="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
  *) PART= ;;
esac
if [ -n "$PART" ]; then
  ncpu=$(nproc)
  mkdir -p "$FAKE/sys/devices/system/cpu"
  for f in possible present online; do echo "0-$((ncpu - 1))" > "$FAKE/sys/devices/system/cpu/$f"; done
  for ((i = 0; i < ncpu; i++)); do
    mkdir -p "$FAKE/sys/devices/system/cpu/cpu$i"
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 3\n\n' \
      "$i" "$FEAT" "$PART" >> "$FAKE/cpuinfo"
  done
else
  echo "test-arm64: warning: no CPU identity for QEMU_CPU=$QEMU_CPU: XNNPACK stays off in the root" >&2
fi

# --- run: a private mount namespace, so nothing stays mounted when this script stops --------
# /dev is a small tmpfs of its own; shared/ read-only.
say "QEMU_CPU=$QEMU_CPU; running the checks in the root (emulated: minutes)"
rc=0
# shellcheck disable=SC2016  # expanded by the inner shell
unshare --mount --propagation private bash -euo pipefail -c '
  R=$1 SHARED=$2 FAKE=$4
  mount -t proc proc "$R/proc"
  mount -t tmpfs -o mode=0755,size=64m dev "$R/dev"
  for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<<"$n"
    mknod -m 0666 "$R/dev/$name" c "$major" "$minor"
  done
  mkdir -p "$R/dev/shm" "$R/dev/pts" && mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
  ln -s /proc/self/fd "$R/dev/fd"
  mount --bind "$SHARED" "$R/work/shared" && mount -o remount,bind,ro "$R/work/shared"
  mount -t tmpfs -o mode=1777 tmp "$R/tmp"
  if [ -s "$FAKE/cpuinfo" ]; then
    mount --bind "$FAKE/cpuinfo" "$R/proc/cpuinfo"
    mount -t tmpfs -o mode=0755 sys "$R/sys" && cp -r "$FAKE/sys/devices" "$R/sys/"
  fi
  exec chroot "$R" /usr/bin/env -i QEMU_CPU="$QEMU_CPU" HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} \
    bash /work/main/scripts/arm64-inside.sh /work/out "$3"
' _ "$ROOT" "$(cd "$SHARED" && pwd)" "${EDGEFACE_ARM64_TESTS:-}" "$FAKE" || rc=$?

# --- compare each arm64 venv's results with its x86 twin's ------------------------------------
OUT=$ROOT/work/out
verdicts=()
for kind in quickstart pios; do
  [ -s "$OUT/$kind.json" ] || { verdicts+=("$kind: no results"); rc=1; continue; }
  pins=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["versions"]; print(" ".join(f"{k}=={v[k]}" for k in ("numpy","opencv-python","ai-edge-litert")))' "$OUT/$kind.json")
  pyver=$(python3 -c 'import json,sys; print(".".join(json.load(open(sys.argv[1]))["python"].split(".")[:2]))' "$OUT/$kind.json")
  if ! twin=$(x86_twin "$kind" "$pyver" "$pins"); then
    verdicts+=("$kind: x86 twin ($pins) did not install"); rc=1; continue
  fi
  # PYTHONPATH: this checkout, should the cached twin's editable install point at an older clone.
  (cd / && PYTHONPATH=$REPO "$twin/bin/python" "$REPO/scripts/cross_cpu.py" dump --shared "$SHARED" \
    --out "$OUT/$kind-x86.json") || { verdicts+=("$kind: x86 dump failed"); rc=1; continue; }
  if line=$(python3 "$REPO/scripts/cross_cpu.py" compare "$OUT/$kind-x86.json" "$OUT/$kind.json"); then
    if [ -s "$twin/.edgeface-note" ]; then line+=" ($(cat "$twin/.edgeface-note"))"; fi
    verdicts+=("$kind: $line")
  else
    verdicts+=("$kind: FAIL $line"); rc=1
  fi
done
mkdir -p "$CACHE/results-$SUITE-$QEMU_CPU"
cp "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.log "$CACHE/results-$SUITE-$QEMU_CPU/" 2>/dev/null || true
inside=$(cat "$OUT/summary.txt" 2>/dev/null || echo "the checks inside did not finish")
status=ok; ((rc == 0)) || status=FAIL
printf 'test-arm64 %s: %s on %s (QEMU_CPU=%s) in %ss: %s | %s\n' "$SUITE" "$status" \
  "$(uname -m)->arm64" "$QEMU_CPU" "$(( $(date +%s) - START ))" "$inside" "$(IFS=';'; echo "${verdicts[*]}")"
exit "$rc"
