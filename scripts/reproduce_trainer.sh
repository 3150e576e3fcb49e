#!/usr/bin/env bash
# The trainer-speed tables of BENCHMARKS.md: `resgrow bench` (eager fp32 against the fast path, in one
# process) for resnet20, resnet56 and resnet110 at batch 128 and 512, resnet56 also with compiled blocks;
# where a resnet56 step's GPU time goes (kernels per step); the fast path of a net grown twice (every h = 1/4)
# with and without h folded into the branches, and the check that folding changes no number; the cost of
# LipGrow's Lipschitz meter; then whether --deterministic makes two runs of one seed identical.
#
#   bash scripts/reproduce_trainer.sh OUTDIR
#
# Needs a CUDA GPU for numbers that mean anything. Environment: DATA (default .data/cifar10-jpeg.zip),
# ARCHS, BATCHES, STEPS (default "resnet20 resnet56 resnet110", "128 512", 200), GROWN (default resnet74:
# the net of the h timing), FOLD_STEPS (100), DET_ARCH, DET_EPOCHS (default resnet20, 3). Each result is also saved as JSON in OUTDIR.
set -euo pipefail
out=${1:?usage: bash scripts/reproduce_trainer.sh OUTDIR}; mkdir -p "$out"
data=${DATA:-.data/cifar10-jpeg.zip}; steps=${STEPS:-200}; grown=${GROWN:-resnet74}
[[ -e $data ]] || { echo "reproduce_trainer: no data at $data (set DATA)" >&2; exit 2; }
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src
for arch in ${ARCHS:-resnet20 resnet56 resnet110}; do
  for bs in ${BATCHES:-128 512}; do
    compiled=(); [[ $arch == resnet56 && $bs == 128 ]] && compiled=(--compile)
    resgrow bench --arch "$arch" --batch-size "$bs" --steps "$steps" --data "$data" "${compiled[@]}" \
      --json "$out/bench_${arch}_b$bs.json"
  done
done
device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
if [[ $device == cuda ]]; then
  python3 scripts/profile_step.py --arch resnet56 --batch-size 128 --bf16-weights
fi
resgrow bench --arch "$grown" --batch-size 128 --steps "$steps" --h 0.25 --data "$data" --json "$out/bench_${grown}_h0.25.json"
python3 scripts/fold_h_check.py --arch "$grown" --steps "${FOLD_STEPS:-100}"
python3 scripts/meter_cost.py --arch "$grown" --device "$device"
python3 scripts/determinism_check.py --data "$data" --arch "${DET_ARCH:-resnet20}" --epochs "${DET_EPOCHS:-3}" \
  --out "$out/determinism"
