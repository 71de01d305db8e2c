#!/usr/bin/env bash
# The reference model's widths x grids comparison: each variant trained with the shipped
# recipe (liverseg/reference/train_config.json, only width and image_size changed) on the
# same patient split, at the same time, then scored by python -m liverseg.benchmarks.reference
# on its best checkpoint (PyTorch, no export). Made for one call on a lent GPU; runs on a CPU
# too (slowly). Works without installing liverseg (the package is staged from the checkout).
#
#   DATA=../shared/data OUT=/tmp/out scripts/compare_widths.sh
#
# Environment: DATA (msd-liver-256/ and chaos-ct-case/ inside), OUT (results: one
# widths.tar.gz with every eval-*.json, epochs-*.csv and log, and released-<variant>.pt for
# the variants in RELEASE), VARIANTS (WIDTHxGRID or WIDTHxGRIDsSEED, default seed the recipe's 42;
# default "16x128 32x128 64x128 16x256 32x256"),
# EPOCHS (default: the recipe's 100), TRAIN_S (stop training after this many seconds; the
# best epoch so far is scored and its epoch count recorded; default 300), DEVICE (cuda),
# RELEASE (default "16x128 16x256").
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$(cd "${DATA:-$ROOT/../shared/data}" && pwd)"
OUT="${OUT:-$PWD/runs/widths}"
VARIANTS="${VARIANTS:-16x128 32x128 64x128 16x256 32x256}"
TRAIN_S="${TRAIN_S:-300}"
DEVICE="${DEVICE:-cuda}"
RELEASE="${RELEASE:-16x128 16x256}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
# shellcheck source=scripts/stage.sh
source "$ROOT/scripts/stage.sh"
cd "$WORK" || exit 1
log() { echo "[$(date +%T)] $*" | tee -a "$WORK/widths.log" >&2; }

log "variants $VARIANTS, epochs ${EPOCHS:-recipe}, train limit ${TRAIN_S}s, device $DEVICE, data $DATA"
"$PY" -m liverseg.trainer.split "$DATA/msd-liver-256/manifest.csv" --group-by volume_idx -o splits --absolute \
    >>"$WORK/widths.log" 2>&1 || { log "split failed"; exit 1; }
for v in $VARIANTS; do
  w=${v%%x*}; g=${v#*x}; seed=42
  case "$g" in *s*) seed=${g#*s}; g=${g%s*} ;; esac
  mkdir -p "$v" && ln -s ../splits "$v/splits" && cp "$ROOT/liverseg/reference/train_config.json" "$v/config.json"
  (cd "$v" && OMP_NUM_THREADS=2 timeout "$TRAIN_S" "$PY" -m liverseg.trainer config.json --quiet \
      --set width="$w" --set image_size="[$g,$g]" --set device="\"$DEVICE\"" --set seed="$seed" ${EPOCHS:+--set epochs=$EPOCHS} \
      >train.log 2>&1; echo "exit $?" >>train.log) &
done
wait
log "training done"
for v in $VARIANTS; do
  best=$(ls "$v"/runs/*/checkpoints/best.pt 2>/dev/null | head -n 1)
  cp "$v"/runs/*/epochs.csv "epochs-$v.csv" 2>/dev/null
  log "$v: $(tail -n 1 "$v/train.log"), $(($(wc -l <"epochs-$v.csv" 2>/dev/null || echo 1) - 1)) epochs, best ${best:-none}"
  [ -n "$best" ] || continue
  OMP_NUM_THREADS=2 "$PY" -m liverseg.benchmarks.reference --checkpoint "$best" --device "$DEVICE" --data "$DATA" \
      --split splits --out "eval-$v.json" >"eval-$v.log" 2>&1 &
done
wait
for v in $VARIANTS; do
  [ -f "eval-$v.json" ] && log "$v: $(head -n 3 "eval-$v.log" | tail -n 1)" || log "$v: no evaluation ($(tail -n 1 "eval-$v.log" 2>/dev/null))"
done
for v in $RELEASE; do
  best=$(ls "$v"/runs/*/checkpoints/best.pt 2>/dev/null | head -n 1)
  [ -n "$best" ] && "$PY" - "$best" "$OUT/released-$v.pt" "$v/config.json" <<'PY' >>"$WORK/widths.log" 2>&1
import json, sys
from liverseg.models.checkpoint import release_checkpoint
print("released", release_checkpoint(sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))["provenance"]))
PY
done
for v in $VARIANTS; do tail -n 5 "$v/train.log" >"train-$v.log" 2>/dev/null; done
tar czf "$OUT/widths.tar.gz" widths.log eval-*.json eval-*.log epochs-*.csv train-*.log splits/split.json 2>/dev/null
log "wrote $OUT/widths.tar.gz"
