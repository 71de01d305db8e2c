#!/usr/bin/env bash
# The CPU-engine ratios of this machine in one go (the issue "CPU inference at the machine's
# limit"): each step is one liverseg-bench (or volume) run whose Targets table judges the
# ratios for this CPU's class (AMX, AVX-512 VNNI, else), all side by side within the step.
# Results go to $OUT (default runs/bench-cpu); copy them to benchmarks/results/<machine>/.
#
#   bash benchmarks/run_cpu_engines.sh                    # all steps
#   STEPS="reference volume" bash benchmarks/run_cpu_engines.sh
#
# Steps (about 5 min on an AMX Xeon, 20-25 min on the AVX2-only EPYC, width 64 being most of it):
#   reference  the shipped model (16 wide, 256 grid inside, 512x512 slices): every CPU engine and
#              precision model-only, the export's gates on 16 labelled CHAOS slices, then
#              liverseg-infer with its defaults end to end against ONNX Runtime fp32 and the
#              best OpenVINO rate over 312 slices (the 78 CHAOS slices 4 times: the run's fixed
#              cost weighs as on a real batch), masks against fp32
#   widths     random weights, width 16 at 512 and 256, width 64 at 512: the issue's table (every
#              default CPU row, bf16 autocast where the CPU has native bf16); liverseg-infer end to
#              end at width 64 over 24 slices against OpenVINO's best model-only rate
#   volume     a synthetic 512x512x300 DICOM series through liverseg-infer with the shipped model
#
# Needs the dev install (make setup) and ../shared/data (real slices for the gates and the
# end-to-end rows).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$PWD/runs/bench-cpu}"
STEPS="${STEPS:-reference widths volume}"
mkdir -p "$OUT"
cd "$ROOT"
grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|avx512_bf16|amx_bf16|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ' >&2
echo >&2
worst=0
for step in $STEPS; do
    echo "== $step" >&2
    rc=0
    case "$step" in
    reference)
        liverseg-bench --checkpoint liverseg/reference/model.pt --case 16:512:1 \
            --backends eager,ort-fp32,ort-int8,ov-fp32,ov-bf16,ov-int8 --rounds 7 \
            --e2e-backends auto,ort-fp32,ov-int8,ort-int8,ov-fp32,ov-bf16 --e2e-rounds 3 --e2e-repeat 4 \
            --scaling '' --no-memory --peak-n 3072 --out "$OUT/reference" || rc=$?
        ;;
    widths)
        liverseg-bench --case 16:512,256:1 --case 64:512:1 --rounds 3 \
            --e2e-width 64 --e2e-slices 24 --e2e-backends auto,ort-fp32,ov-int8 --e2e-rounds 2 \
            --scaling '' --no-memory --peak-n 3072 --out "$OUT/widths" || rc=$?
        ;;
    volume)
        python -m liverseg.benchmarks.volume --model liverseg/reference/model.onnx --rounds 3 --out "$OUT/volume" || rc=$?
        ;;
    *)
        echo "unknown step $step (reference, widths, volume)" >&2
        exit 2
        ;;
    esac
    echo "== $step: exit $rc (1: a row failed, its error is in the table)" >&2
    [ "$rc" -gt "$worst" ] && worst=$rc
done
echo "results under $OUT" >&2
exit "$worst"
