#!/usr/bin/env bash
# Which execution mode is fastest inside a CUDA graph? Usage: bash scripts/gpu_variants.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/variants}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=/tmp/rgcache
for bs in 128 512; do
  python3 -m resgrow bench --arch resnet56 --batch-size $bs --steps 200 --data .data/cifar10-jpeg.zip --json "$out/variants_r56_b$bs.json"
done
