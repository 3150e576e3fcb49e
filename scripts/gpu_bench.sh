#!/usr/bin/env bash
# Issue 2, result 1: resgrow bench for resnet20/56/110 at batch 128 and 512 on the real data.
# Usage: bash scripts/gpu_bench.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/bench}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=/tmp/rgcache
for arch in resnet20 resnet56 resnet110; do
  for bs in 128 512; do
    python3 -m resgrow bench --arch $arch --batch-size $bs --steps 200 --data .data/cifar10-jpeg.zip --json "$out/bench_${arch}_b$bs.json"
  done
done
