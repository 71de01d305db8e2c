#!/usr/bin/env bash
# Retrain liverseg's reference model from scratch on ../shared/data and reproduce its numbers.
#
#   scripts/train_reference.sh [WORK_DIR]      (default: runs/reference-retrain)
#
# Environment: DATA (default ../shared/data beside the checkout), DEVICE (default: the
# config's "auto": CUDA when present, else the CPU). Steps, each a liverseg command:
#   1. liverseg-split: msd-liver-256 grouped by patient (volume_idx), seed 42
#   2. liverseg-train liverseg/reference/train_config.json (100 epochs; 310 s on an H200 shared with
#      five other trainings, about 4 h on 2 CPU cores at 145 s per epoch)
#   3. release: the best checkpoint without optimiser state or machine paths, with provenance
#   4. liverseg-export: ONNX fp32 + int8 (calibrated on training slices, gated on all validation slices)
#   5. python -m liverseg.benchmarks.reference: validation per patient, robustness rows, CHAOS, LiTS 117
# To ship the result: copy WORK_DIR/model.pt and WORK_DIR/export/model{,.int8}.onnx into liverseg/reference/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "${DATA:-$ROOT/../shared/data}" && pwd)
WORK=${1:-$ROOT/runs/reference-retrain}
mkdir -p "$WORK"
cd "$WORK"

liverseg-split "$DATA/msd-liver-256/manifest.csv" --group-by volume_idx -o splits --absolute
cp "$ROOT/liverseg/reference/train_config.json" config.json
liverseg-train config.json ${DEVICE:+--set device="\"$DEVICE\""}
BEST=$(ls -t runs/*/checkpoints/best.pt | head -n 1)
python - "$BEST" <<'PY'
import json, sys
from liverseg.models.checkpoint import load_checkpoint, release_checkpoint
provenance = json.load(open("config.json"))["provenance"]
ckpt = load_checkpoint(sys.argv[1])
seconds = sum(float(h.get("seconds") or 0) for h in ckpt.history)
provenance["trained_on"] = (
    f"device {ckpt.config.get('device')}, torch {ckpt.versions.get('torch')}, {ckpt.versions.get('platform')}; "
    f"best epoch {ckpt.epoch} of {ckpt.config.get('epochs')}, reached after {seconds:.0f} s of training"
)
print("released", release_checkpoint(sys.argv[1], "model.pt", provenance))
PY
liverseg-export model.pt --format onnx --int8 --calibration splits/train_x.csv --calibration-count 64 \
    --validation splits/val_x.csv --validation-count 113 --out export
python -m liverseg.benchmarks.reference --model export/model.onnx --data "$DATA" --split splits \
    --engine onnxruntime --precision fp32 --out reference-eval.json
