#!/usr/bin/env bash
# Everything issue 3 still needs from a GPU, in one command, for a machine without the sessions' 15-minute
# device limit (about 40 min on an H100 or H200; packages 1-3 of BENCHMARKS.md are the same work cut to fit
# that limit):
#   1. the four 160-epoch restart baselines of resnet74, one after another, so that each has a clock of
#      its own: multilevel's cycles (cosine_restarts at 60, 110) and LipGrow's lr (cosine_reset at the
#      epochs of the committed lipgrow row of the same seed), seeds 0 and 1;
#   2. the together check (scripts/together_check.py) and the folded-h timing (scripts/gpu_fold_h.sh),
#      GPU checks that are skipped, with a line, where torch sees no CUDA device;
#   3. the issue's table: the new rows with the committed baseline, lipgrow and multilevel rows of
#      benchmarks/issue3/160ep, `resgrow compare --seeds`, to OUTDIR/summary_160ep.md (+ the plot).
# Usage: bash scripts/gpu_pending.sh OUTDIR
# The same command again skips finished rows and resumes a stopped one (runs and checkpoints stay in
# OUTDIR/runs). Needs the full zip at .data/cifar10-jpeg.zip (DATA overrides); EPOCHS and ARCH override
# 160 and resnet74 only to try the script itself (then LIP_RESTARTS must give lipgrow's epochs).
# What to commit afterwards: BENCHMARKS.md, "Pending GPU work", the paragraph after package 3.
set -uo pipefail
out=${1:-/tmp/resgrow_pending}; mkdir -p "$out"
E=${EPOCHS:-160}; arch=${ARCH:-resnet74}; data=${DATA:-.data/cifar10-jpeg.zip}
export RUNDIR=${RUNDIR:-$out/runs} ARCH=$arch DATA=$data
[[ -f $data ]] || { echo "gpu_pending: no data at $data (copy cifar10-jpeg.zip there or set DATA)"; exit 2; }
RUNS="restarts restarts_lip" bash scripts/gpu_depth.sh "$out/depth" "$E" 0,1 10
if python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  RESGROW_CACHE=${RESGROW_CACHE:-/tmp/rgcache} PYTHONPATH=src python3 scripts/together_check.py --data "$data" --device cuda \
    --json "$out/together_check.json" 2>&1 | tee "$out/together_check.log"
  bash scripts/gpu_fold_h.sh "$out/fold_h"
else
  echo "gpu_pending: no CUDA device: the together check and the folded-h timing are skipped"
fi
tag=$(echo "$arch" | sed 's/^cifar_resnet/r/; s/^resnet/r/')
committed=benchmarks/issue3/160ep
rows=()
for name in baseline baseline_restarts baseline_restarts_lip lipgrow multilevel; do
  for seed in 0 1; do
    for where in "$RUNDIR" "$committed"; do  # a row trained here first, else the committed one
      if [[ -f $where/${name}_${tag}_s$seed/metrics.jsonl ]]; then rows+=("$where/${name}_${tag}_s$seed"); break; fi
    done
  done
done
echo "gpu_pending: the table of ${#rows[@]} rows -> $out/summary_160ep.md"
plot=(); python3 -c "import matplotlib" 2>/dev/null && plot=(--plot "$out/accuracy_vs_time_160ep.png")
PYTHONPATH=src python3 -m resgrow compare --seeds "${plot[@]}" "${rows[@]}" | tee "$out/summary_160ep.md"
