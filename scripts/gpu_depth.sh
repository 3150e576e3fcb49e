#!/usr/bin/env bash
# Issue 3: baseline resnet74 (cosine and cosine with the multilevel restarts), multilevel and lipgrow
# (both 3-3-3 -> 12-12-12), one after another, same data pipeline, optimizer and epochs.
# Usage: bash scripts/gpu_depth.sh OUTDIR EPOCHS SEED [LIP_WINDOW]
# Environment: ARCH, START, DATA override the defaults; EXTRA adds flags to every row (e.g.
# EXTRA=--bf16-weights once gpu_speed.sh has shown it is faster); RUNS picks a subset of
# "baseline restarts multilevel lipgrow" (a 160-epoch resnet74 run takes ~8 min: one per command).
# A row that may outlast one 10-min device command (resnet122 at 160 epochs, or resnet74's baseline on a
# slow day): RUNDIR=/tmp/runs keeps the run and its checkpoint outside $OUT (which each command empties),
# and STOP_AFTER=EPOCH or DEADLINE=SECONDS (SIGTERM: the epoch ends with a checkpoint) stops it in time;
# the same command, sent again while that machine is still warm, resumes it. Logs are copied to $OUT/<run>.
set -uo pipefail
out=${1:-/tmp/depth}; E=${2:-160}; seed=${3:-0}; win=${4:-10}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=/tmp/rgcache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
arch=${ARCH:-resnet74}; start=${START:-3-3-3}; data=${DATA:-.data/cifar10-jpeg.zip}
tag=$(echo "$arch" | sed 's/^cifar_resnet/r/; s/^resnet/r/')  # resnet74 -> r74: run dirs like multilevel_r74_s0
common="--arch $arch --data $data --epochs $E --batch-size 128 --lr 0.1 --wd 5e-4 --seed $seed --quiet ${EXTRA:-}"
# multilevel's default growth epochs (37.5% of the run, then the rest split evenly), for the restart baseline
restarts=$(python3 -c "print(f'{round($E*0.375)},{round($E*(0.375+0.3125))}')")
rundir=${RUNDIR:-$out}; mkdir -p "$rundir"
run() {
  name=$1; shift; d=$rundir/$name
  [[ -f $d/checkpoint.pt ]] && set -- "$@" --resume  # a run stopped by STOP_AFTER goes on where it stopped
  # DEADLINE=S: SIGTERM after S seconds, so the run ends its epoch with a checkpoint before the command limit
  ${DEADLINE:+timeout --preserve-status -s TERM $DEADLINE} python3 -m resgrow train $common --out "$d" "$@" \
    ${STOP_AFTER:+--stop-after $STOP_AFTER} 2>&1 | tail -2
  rc=${PIPESTATUS[0]}
  [[ $d != "$out/$name" ]] && mkdir -p "$out/$name" && cp "$d"/metrics.jsonl "$d"/metrics.csv "$d"/run.json "$out/$name/"
  # 8 files come back from a device command: drop the checkpoint of a run that has finished
  [[ $rc == 0 && -z ${STOP_AFTER:-} ]] && rm -f "$d/checkpoint.pt"
  [[ $rc == 143 ]] && echo "$name: stopped at DEADLINE=$DEADLINE s; the same command resumes it from $d"
}
runs=" ${RUNS:-baseline restarts multilevel lipgrow} "
[[ $runs == *" baseline "* ]] && run baseline_${tag}_s$seed --schedule cosine
[[ $runs == *" restarts "* ]] && run baseline_restarts_${tag}_s$seed --schedule cosine_restarts --restarts "$restarts"
[[ $runs == *" multilevel "* ]] && run multilevel_${tag}_s$seed --method multilevel --start-blocks $start
[[ $runs == *" lipgrow "* ]] && run lipgrow_${tag}_s$seed --method lipgrow --start-blocks $start --lip-window "$win"
python3 -m resgrow compare "$out"/*_s$seed | tee "$out/summary_s$seed.md"
