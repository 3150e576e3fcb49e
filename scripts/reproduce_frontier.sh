#!/usr/bin/env bash
# The baseline's accuracy-time frontier of BENCHMARKS.md: the fixed-size net trained at several budgets (epochs),
# for each seed, then every given method run held against it (`resgrow compare --frontier`: the baseline's
# accuracy at the run's time, and its time for the run's accuracy).
#
#   bash scripts/reproduce_frontier.sh OUTDIR ARCH "BUDGETS" [SEEDS] [METHOD_RUN_DIRS...]
#   bash scripts/reproduce_frontier.sh out/frontier resnet74 "60 80 100 120" 0,1 benchmarks/depth/160ep/*_r74_s*
#
# The budgets are rows baseline_<ARCH>_<E>ep_s<seed> in OUTDIR; the same command again skips finished rows and
# resumes a stopped one. Plain baseline runs among METHOD_RUN_DIRS (those of other budgets) join the frontier;
# the others are held against it. Environment: DATA (default .data/cifar10-jpeg.zip), EXTRA (flags for every
# row), STOP_AFTER.
set -euo pipefail
out=${1:?usage: bash scripts/reproduce_frontier.sh OUTDIR ARCH \"BUDGETS\" [SEEDS] [METHOD_RUN_DIRS...]}
arch=${2:?ARCH}; budgets=${3:?BUDGETS, e.g. \"40 80 160\"}; seeds=${4:-0}
shift $(( $# < 4 ? $# : 4 ))
E=${budgets%% *}; rows=baseline
source "$(dirname "$0")/rows.sh"

for seed in ${seeds//,/ }; do
  for E in $budgets; do
    train "baseline_${arch}_${E}ep_s$seed" --seed "$seed" --epochs "$E"
  done
done

resgrow compare --frontier --plot "$out/frontier.png" "$out"/baseline_"${arch}"_*ep_s* "$@" | tee "$out/frontier.md"
