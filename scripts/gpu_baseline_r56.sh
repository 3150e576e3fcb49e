#!/usr/bin/env bash
# Issue 2, result 2: the reference baseline. resnet56, full cifar10-jpeg.zip, 160 epochs, batch 128,
# lr 0.1, cosine, wd 5e-4, seed 0. Usage: bash scripts/gpu_baseline_r56.sh OUTDIR [SEED]
set -uo pipefail
out=${1:-/tmp/baseline}; seed=${2:-0}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=/tmp/rgcache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m resgrow train --arch resnet56 --data .data/cifar10-jpeg.zip --epochs 160 --batch-size 128 --lr 0.1 \
  --schedule cosine --wd 5e-4 --seed "$seed" --out "$out/baseline_r56_s$seed" --quiet
rm -f "$out/baseline_r56_s$seed/checkpoint.pt"  # 7 MB we do not need back
