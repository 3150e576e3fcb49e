#!/usr/bin/env bash
# The MG/OPT table of BENCHMARKS.md: a deep net trained by plain SGD, by MG/OPT with 2 and 3 levels, and by
# Chang's multilevel growth, for each seed, one run after another; then the table (`resgrow compare --seeds`:
# final accuracy, time, time to the baseline's accuracy minus 0.3 points, fine-gradient equivalents).
#
#   bash scripts/reproduce_mgopt.sh OUTDIR ARCH EPOCHS [SEEDS]     # e.g. cifar_resnet122 30 0 on a GPU
#
# The CPU study: DATA=cifar10-sample EXTRA="--device cpu" bash scripts/reproduce_mgopt.sh OUTDIR cifar_resnet26 4 0
# Each row is one `resgrow train` in OUTDIR/<row>; the same command again skips finished rows and resumes a
# stopped one. Environment: DATA (default .data/cifar10-jpeg.zip), ROWS (a subset of "baseline mgopt2 mgopt3
# multilevel"), EXTRA (flags for every row), MGOPT (flags for the MG/OPT rows), STOP_AFTER.
set -euo pipefail
out=${1:?usage: bash scripts/reproduce_mgopt.sh OUTDIR ARCH EPOCHS [SEEDS]}; arch=${2:?ARCH}; E=${3:?EPOCHS}; seeds=${4:-0}
rows="baseline mgopt2 mgopt3 multilevel"
source "$(dirname "$0")/rows.sh"

for seed in ${seeds//,/ }; do
  s=(--seed "$seed")
  if want baseline; then train "baseline_${arch}_s$seed" "${s[@]}"; fi
  if want mgopt2; then train "mgopt2_${arch}_s$seed" "${s[@]}" --method mgopt --levels 2 ${MGOPT:-}; fi
  if want mgopt3; then train "mgopt3_${arch}_s$seed" "${s[@]}" --method mgopt --levels 3 ${MGOPT:-}; fi
  if want multilevel; then train "multilevel_${arch}_s$seed" "${s[@]}" --method multilevel; fi
done

table "baseline_${arch}"
