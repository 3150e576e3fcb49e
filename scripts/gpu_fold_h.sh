#!/usr/bin/env bash
# Folded h on the GPU: the step time of resnet74 with h = 1 (a net built at full depth), h = 1/4 with h
# folded into the branches (the default) and h = 1/4 not folded (the add's backward scales every branch's
# gradient); then the numbers check, folded against not. One device command, about 3 min.
# Usage: bash scripts/gpu_fold_h.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/fold_h}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=/tmp/rgcache
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"
  for h in 1 0.25 0.5; do
    python3 -m resgrow bench --arch resnet74 --batch-size 128 --steps 400 --h $h --data .data/cifar10-jpeg.zip --json "$out/bench_resnet74_h$h.json"
  done
  python3 scripts/fold_h_check.py --arch resnet74 --steps 100
} 2>&1 | tee "$out/fold_h.log"
