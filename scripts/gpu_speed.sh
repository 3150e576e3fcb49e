#!/usr/bin/env bash
# Issue 2: the fast path against eager fp32 at resnet56 / batch 128 (with and without bf16 weight copies and compiled blocks).
# One device command, about 7-9 min (most of it inductor compiling resnet56's blocks), most important
# first so that a cut-off run still returns what matters. Every bench run includes the trainer's default
# fast path and eager fp32, so each ratio is measured in one process.
# Usage: bash scripts/gpu_speed.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/speed}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=/tmp/rgcache
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"
  python3 -m resgrow bench --arch resnet56 --batch-size 128 --steps 200 --data .data/cifar10-jpeg.zip --compile --json "$out/bench_resnet56_b128.json"
  # where the step time goes: kernel count and kernel time vs the graph replay time
  python3 scripts/profile_step.py --arch resnet56 --batch-size 128
  python3 scripts/profile_step.py --arch resnet56 --batch-size 128 --bf16-weights
  python3 scripts/meter_cost.py --arch resnet74 --device cuda  # LipGrow's per-epoch score, a few seconds
  bash scripts/gpu_determinism.sh /tmp/det  # results are in this log; its run dirs would pass the 8-file limit
  for arch in resnet20 resnet110; do
    python3 -m resgrow bench --arch $arch --batch-size 128 --steps 200 --data .data/cifar10-jpeg.zip --json "$out/bench_${arch}_b128.json"
  done
} 2>&1 | tee "$out/speed.log"
