#!/usr/bin/env bash
# Quick GPU check of the fast path: a short real run and one bench. Usage: bash scripts/gpu_smoke.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/smoke}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=/tmp/rgcache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m resgrow train --arch resnet20 --data .data/cifar10-jpeg.zip --epochs 3 --out "$out/smoke_r20" --quiet 2>&1 | tail -5
cat "$out/smoke_r20/metrics.csv"
python3 -m resgrow bench --arch resnet56 --batch-size 128 --steps 200 --data .data/cifar10-jpeg.zip
