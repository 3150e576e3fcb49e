#!/usr/bin/env bash
# The depth-growth table of BENCHMARKS.md: resnet74 on CIFAR-10 trained at a fixed size, with two restart
# baselines (the fixed-size net with multilevel's or LipGrow's lr restarts), and grown from 3-3-3 by
# lipgrow and multilevel; for each seed, one run after another, so that each has a clock of its own.
# Then the table (`resgrow compare --seeds`) and its plot.
#
#   bash scripts/reproduce_depth.sh OUTDIR [EPOCHS] [SEEDS]        # defaults: 160 epochs, seeds 0,1
#
# Times mean something on a GPU only. Each row is one `resgrow train` in OUTDIR/<row>; the same command
# again skips finished rows and resumes a stopped one (Ctrl-C, SIGTERM, a job's time limit), so the work
# can be cut into pieces. Environment:
#   DATA   the data (default .data/cifar10-jpeg.zip, an ImageFolder zip of CIFAR-10)
#   ARCH, START   the final net and the methods' start (default resnet74 from 3-3-3)
#   ROWS   a subset of "baseline restarts lipgrow restarts_lip multilevel" (the default), or also
#          "multilevel_late restarts_late": multilevel grown at 56% and 78% of the run, and its restart baseline;
#          "compound compound_alternate": compound growth from START at half the widths, depth and width grown
#          at the same growths or by turns
#   LIP_WINDOW   lipgrow's --lip-window (default 10);   EXTRA   flags for every row
#   STOP_AFTER   stop every row after this epoch (resumably), e.g. to split the work over several jobs
set -euo pipefail
out=${1:?usage: bash scripts/reproduce_depth.sh OUTDIR [EPOCHS] [SEEDS]}; E=${2:-160}; seeds=${3:-0,1}
arch=${ARCH:-resnet74}; start=${START:-3-3-3}
rows="baseline restarts lipgrow restarts_lip multilevel"
here=$(dirname "$0")
source "$here/rows.sh"
tag=$(echo "$arch" | sed 's/^cifar_resnet/r/; s/^resnet/r/')  # resnet74 -> r74: rows like lipgrow_r74_s0

for seed in ${seeds//,/ }; do
  if want baseline; then train "baseline_${tag}_s$seed" --seed "$seed"; fi
  depth_rows train "$seed"
  if want compound; then train "compound_${tag}_s$seed" --seed "$seed" --method compound --start-blocks "$start"; fi
  if want compound_alternate; then
    train "compound_alternate_${tag}_s$seed" --seed "$seed" --method compound --start-blocks "$start" \
      --grow-order alternate
  fi
done

table "baseline_${tag}"
