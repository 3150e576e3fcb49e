#!/usr/bin/env bash
# The go-wide-then-narrow table of BENCHMARKS.md: the thin net trained alone for EPOCHS, the same run by
# wide2narrow (its wide net, imitation, distillation and labels all inside EPOCHS, its wide net's accuracy in a
# column), and the thin net trained alone for as long as wide2narrow took (its epochs from the two runs' times);
# for each seed, then the table (`resgrow compare --seeds`).
#
#   bash scripts/reproduce_wide2narrow.sh OUTDIR ARCH EPOCHS [SEEDS]     # e.g. resnet56 30 0 on a GPU
#
# Each row is one `resgrow train` in OUTDIR/<row>; the same command again skips finished rows and resumes a
# stopped one. Environment: DATA (default .data/cifar10-jpeg.zip), ROWS (a subset of "baseline wide2narrow
# equal_time"), EXTRA (flags for every row), W2N (flags for the wide2narrow row), STOP_AFTER.
set -euo pipefail
out=${1:?usage: bash scripts/reproduce_wide2narrow.sh OUTDIR ARCH EPOCHS [SEEDS]}; arch=${2:?ARCH}; E=${3:?EPOCHS}
seeds=${4:-0}
rows="baseline wide2narrow equal_time"
source "$(dirname "$0")/rows.sh"

seconds() { python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])['train_seconds'])" "$1/metrics.jsonl"; }

for seed in ${seeds//,/ }; do
  s=(--seed "$seed")
  base=baseline_${arch}_s$seed method=wide2narrow_${arch}_s$seed
  if want baseline; then train "$base" "${s[@]}"; fi
  if want wide2narrow; then train "$method" "${s[@]}" --method wide2narrow ${W2N:-}; fi
  if want equal_time; then
    # the thin net alone for the epochs that take as long as the whole method did
    epochs=$(python3 -c "import sys; print(max(1, round($E * float(sys.argv[1]) / float(sys.argv[2]))))" \
             "$(seconds "$out/$method")" "$(seconds "$out/$base")")
    E_run=$E; E=$epochs
    train "baseline_equal_time_${arch}_s$seed" "${s[@]}" --epochs "$epochs"
    E=$E_run
  fi
done

table "baseline_${arch}"
