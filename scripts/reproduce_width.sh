#!/usr/bin/env bash
# The width-growth tables of BENCHMARKS.md: a net trained at its final width, and grown from a quarter of its
# widths by --method widen (vt with learning-rate adaptation; Net2Net's widening without it; vt with batch
# adaptation), for each seed, one run after another; then the table (`resgrow compare --seeds`) and its plot.
#
#   bash scripts/reproduce_width.sh OUTDIR ARCH EPOCHS [SEEDS]     # e.g. resnet20 160, or wrn16_8 30; seeds 0,1
#
# Times mean something on a GPU only. Each row is one `resgrow train` in OUTDIR/<row>; the same command again
# skips finished rows and resumes a stopped one. Environment: DATA (default .data/cifar10-jpeg.zip), ROWS (a
# subset of "baseline widen net2wider batch"), EXTRA (flags for every row), GROWTH (flags for the grown rows, e.g.
# "--growths 4 --widen-every 5"), STOP_AFTER (stop every row after that epoch).
set -euo pipefail
out=${1:?usage: bash scripts/reproduce_width.sh OUTDIR ARCH EPOCHS [SEEDS]}; arch=${2:?ARCH}; E=${3:?EPOCHS}; seeds=${4:-0,1}
rows="baseline widen net2wider batch"
source "$(dirname "$0")/rows.sh"

for seed in ${seeds//,/ }; do
  s=(--seed "$seed")
  if want baseline; then train "baseline_${arch}_s$seed" "${s[@]}"; fi
  grown=("${s[@]}" --method widen ${GROWTH:-})
  if want widen; then train "widen_${arch}_s$seed" "${grown[@]}"; fi
  if want net2wider; then train "net2wider_${arch}_s$seed" "${grown[@]}" --widen-init net2wider --no-lr-adapt; fi
  if want batch; then train "widen_batch_${arch}_s$seed" "${grown[@]}" --batch-adapt; fi
done

table "baseline_${arch}"
