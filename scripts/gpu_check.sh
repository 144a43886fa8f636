#!/usr/bin/env bash
# The short, prepared GPU check for training/ (docs/training.md, "GPU check"): on a GPU machine,
#   bash scripts/gpu_check.sh            # every GPU, NCCL, fp16 AMP, EdgeFace-XS, 200 steps
# makes a synthetic RecordIO set (the demo photo, jittered, 2,000 identities: only images/s and
# "the loss falls" mean anything here), trains EdgeFace-XS with the recipe's batch of 512 a GPU,
# resumes it for 20 more steps, and prints log.csv plus one summary line with images/s.
# CPU dry run of the same path (gloo, fp32, tiny): DEVICE=cpu bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/edgeface_gpu_check}
PY=${PYTHON:-python3}
if [ "${DEVICE:-gpu}" = cpu ]; then
  NPROC=2 STEPS=${STEPS:-6} BATCH=${BATCH:-8} FP16=False IMAGES=${IMAGES:-400} WORKERS=0
  export OMP_NUM_THREADS=1
else
  command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: DEVICE=cpu for a dry run" >&2; exit 2; }
  NPROC=$(nvidia-smi -L | wc -l) STEPS=${STEPS:-200} BATCH=${BATCH:-512} FP16=True
  IMAGES=${IMAGES:-40000} WORKERS=${WORKERS:-8}
fi
rm -rf "$OUT" && mkdir -p "$OUT"
"$PY" - "$OUT/rec" "$IMAGES" <<'PYEOF'
import sys
from pathlib import Path

import cv2
import numpy as np

from edgeface_cam.detect import YuNetDetector
from edgeface_cam.align import align_face
from training.data import write_records

out, n = Path(sys.argv[1]), int(sys.argv[2])
photo = sorted(Path("assets/demo").glob("*.png"))[0]
img = cv2.imread(str(photo))
face = YuNetDetector().detect(img)[0]
crop = align_face(img, face.landmarks, face.landmark_names)
rng = np.random.default_rng(0)
samples = []
for i in range(n):  # jittered copies: shift, brightness, noise; identities spread evenly
    m = np.float32([[1, 0, rng.integers(-6, 7)], [0, 1, rng.integers(-6, 7)]])
    x = cv2.warpAffine(crop, m, (112, 112), borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    x = np.clip(x * rng.uniform(0.7, 1.3) + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)
    samples.append((i % max(2, n // 20), cv2.imencode(".jpg", x)[1].tobytes()))
out.mkdir(parents=True)
write_records(out, samples)
print(f"synthetic set: {n} images, {max(2, n // 20)} identities in {out}")
PYEOF
run() {
  "$PY" -m torch.distributed.run --nproc_per_node="$NPROC" --standalone -m training.train \
    training/configs/edgeface_xs_gamma_06.py "rec=$OUT/rec" "output=$OUT/xs" "fp16=$FP16" \
    "batch_size=$BATCH" "num_workers=$WORKERS" "frequent=$(( STEPS / 10 > 0 ? STEPS / 10 : 1 ))" \
    "save_every=$STEPS" "val_targets=[]" "$@"
}
start=$(date +%s)
run "max_steps=$STEPS"
run "max_steps=$(( STEPS + STEPS / 10 + 1 ))" --resume
cat "$OUT/xs/log.csv"
"$PY" - "$OUT/xs/log.csv" "$NPROC" "$FP16" "$(( $(date +%s) - start ))" <<'PYEOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
speed = sorted(float(r["images_per_s"]) for r in rows[1:]) or [float(rows[0]["images_per_s"])]
losses = [float(r["loss"]) for r in rows]
late = sum(losses[-3:]) / len(losses[-3:])
print(f"gpu_check: ranks={sys.argv[2]} fp16={sys.argv[3]} steps={rows[-1]['step']} "
      f"images_per_s_median={speed[len(speed) // 2]:.1f} loss {losses[0]:.3f} -> {late:.3f} "
      f"(mean of the last 3 rows) wall_s={sys.argv[4]}")
# A few CPU dry-run steps cannot show learning; 200 GPU steps must.
sys.exit(0 if sys.argv[3] != "True" or late < losses[0] else 1)
PYEOF
