#!/usr/bin/env bash
# All GPU benchmark rows in one call (a few minutes), results under $OUT/gpu-<card>/
# ($OUT defaults to runs/bench under the current folder; never the checkout's benchmarks/).
#
#   OUT=/tmp/out bash benchmarks/run_gpu.sh                 # defaults: U-Net w64, 512x512, batch 1,8,32
#   OUT=/tmp/out bash benchmarks/run_gpu.sh --seconds 1     # extra arguments go to benchmarks/gpu.py
#
# Works without installing liverseg: when `import liverseg.benchmarks` fails, the
# package layout is rebuilt from symlinks in a temporary folder (scripts/stage.sh). (`pip install --no-deps --no-build-isolation -e .` is the
# alternative where setuptools is present.) No network is needed.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUT="${OUT:-$PWD/runs/bench}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
cd "$ROOT"
# shellcheck source=scripts/stage.sh
source "$ROOT/scripts/stage.sh"
# Run from the stage: with the repository as the current folder, `python -m` would find
# the bare ./liverseg (core only) first.
[ -n "${STAGE:-}" ] && cd "$STAGE"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" >&2
# The script stops starting rows after --budget-s (200 s) and writes results after every row;
# the outer timeout is a last resort that still leaves the partial files under $OUT.
timeout 235 "$PY" -m liverseg.benchmarks.gpu --out "$OUT" "$@"
rc=$?
echo "exit $rc; results:" >&2
find "$OUT" -name 'bench-gpu-*' -newer "$ROOT/benchmarks/gpu.py" 2>/dev/null | sort >&2
exit $rc
