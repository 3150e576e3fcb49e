#!/usr/bin/env bash
# fp32 against bf16 autocast (both channels_last) on the CPU: resnet20, 3 epochs of all of CIFAR-10, seeds 0 and 1,
# one run after another on an idle machine. Usage: benchmarks/cpu/precision/run.sh DATA_ZIP
set -euo pipefail
cd "$(dirname "$0")"
data=$1
for seed in 0 1; do
  for p in fp32 bf16; do
    d=${p}_s$seed
    [[ -f $d/metrics.jsonl && $(wc -l < $d/metrics.jsonl) -eq 3 ]] && continue
    rm -rf "$d"
    echo "$d: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    resgrow train --arch resnet20 --data "$data" --epochs 3 --seed $seed --device cpu --precision $p --quiet --out "$d"
    rm -f "$d"/checkpoint*.pt
  done
done
resgrow compare fp32_s0 bf16_s0 fp32_s1 bf16_s1 | tee summary.md
# what `resgrow train` ran on a CPU before it had a fast path: fp32 NCHW, seed 0
if [[ ! -f fp32_nchw_s0/metrics.jsonl ]]; then
  echo "fp32_nchw_s0: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  resgrow train --arch resnet20 --data "$data" --epochs 3 --seed 0 --device cpu --precision fp32 --no-channels-last --quiet --out fp32_nchw_s0
  rm -f fp32_nchw_s0/checkpoint*.pt
fi
resgrow compare fp32_nchw_s0 fp32_s0 bf16_s0 fp32_s1 bf16_s1 | tee summary.md
