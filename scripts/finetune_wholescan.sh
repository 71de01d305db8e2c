#!/usr/bin/env bash
# The whole-scan fine-tuning tried on 2026-12-07 (issue 27), kept to be run again with more data or time.
#
#   scripts/finetune_wholescan.sh [WORK_DIR]     (default: runs/finetune-wholescan)
#
# Fine-tunes the shipped reference model (liverseg/reference/model.pt, `init_from`) on msd-liver-256's
# training slices plus slices of the HU volumes lits-117 and totalseg-example (liver, and the pelvis
# without it), each in the contract window and two other windows (python -m liverseg.trainer.slices);
# then scores best.pt and last.pt with the rows of python -m liverseg.benchmarks.reference.
# On 2 cores of an Intel Xeon (AVX-512 VNNI, no BF16/AMX), channels-last fp32: 164 s per epoch of
# 1,117 slices when the machine was quiet, 8 epochs. Measured (MODEL_CARD.md, "Tried and not shipped"):
# no candidate beat the shipped weights with the default whole-scan rules on the held-out rows
# (CHAOS 0.952-0.959 against 0.963, ircadb-17 0.920-0.944 against 0.943), so they were not shipped.
# Environment: DATA (default ../shared/data), EPOCHS (8), LR (4e-4), REPEAT (how many times the volume
# slices are listed, 1).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "${DATA:-$ROOT/../shared/data}" && pwd)
WORK=${1:-$ROOT/runs/finetune-wholescan}
mkdir -p "$WORK"
cd "$WORK"
[[ -f splits/train_x.csv ]] || liverseg-split "$DATA/msd-liver-256/manifest.csv" --group-by volume_idx -o splits --absolute
[[ -f volume-slices/x.csv ]] || python -m liverseg.trainer.slices --data "$DATA" --out volume-slices
cp splits/train_x.csv train_x.csv
cp splits/train_y.csv train_y.csv
for _ in $(seq "${REPEAT:-1}"); do
  tail -n +2 volume-slices/x.csv >> train_x.csv
  tail -n +2 volume-slices/y.csv >> train_y.csv
done
cp "$ROOT/liverseg/reference/train_config.json" config.json
liverseg-train config.json --set tdata_x_path='"train_x.csv"' --set tdata_y_path='"train_y.csv"' \
  --set init_from="\"$ROOT/liverseg/reference/model.pt\"" --set epochs="${EPOCHS:-8}" --set lr="${LR:-4e-4}" \
  --set device='"cpu"' --set output_dir='"runs"'
RUN=$(ls -td runs/*/ | head -n 1)
for ck in best last; do
  python -m liverseg.benchmarks.reference --checkpoint "$RUN/checkpoints/$ck.pt" --data "$DATA" --split splits \
    --out "reference-eval-$ck.json"
  python - "$RUN/checkpoints/$ck.pt" "$DATA" <<'PY'
import sys
from pathlib import Path
from liverseg.benchmarks.scans import scan_rows, scan_table
print(scan_table(scan_rows(Path(sys.argv[1]), Path(sys.argv[2]))))
PY
done
