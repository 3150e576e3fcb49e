#!/usr/bin/env bash
# Issue 3: baseline resnet74 (cosine and cosine with the multilevel restarts), multilevel and lipgrow
# (both 3-3-3 -> 12-12-12), one after another, same data pipeline, optimizer and epochs.
# Usage: bash scripts/gpu_depth.sh OUTDIR EPOCHS SEED [LIP_WINDOW]
# Environment: ARCH, START, DATA override the defaults; EXTRA adds flags to every row (e.g.
# EXTRA="--compile blocks" to time compiled blocks); RUNS picks a subset of
# "baseline restarts multilevel lipgrow" (a 160-epoch resnet74 run takes ~8 min: one per command), or the
# optional "multilevel_late restarts_late" (multilevel grown at 56% and 78% of the run, and its restart baseline)
# and "restarts_lip" (lipgrow's restart baseline: --schedule cosine_reset at the epochs of lipgrow's grows,
# LIP_RESTARTS=27,83, by default those of this seed's committed lipgrow row in benchmarks/issue3/160ep).
# Runs live in RUNDIR (default /tmp/resgrow_depth_runs), outside $OUT, which each device command empties
# and from which at most 8 files come back: only each trained row's metrics.jsonl and run.json are copied
# to $OUT/<run>. Longer than one 10-min device command (all four rows, or resnet122's 160 epochs):
# DEADLINE=SECONDS (counted from the script's start) ends the row in progress with SIGTERM (its epoch
# ends with a checkpoint) and starts no row with less than a minute left; the same command, sent again
# while that machine is still warm, skips the finished rows and resumes the stopped one. STOP_AFTER=EPOCH
# stops every row after that epoch instead. A finished row is never trained again: clear RUNDIR to rerun.
set -uo pipefail
out=${1:-/tmp/depth}; E=${2:-160}; seed=${3:-0}; win=${4:-10}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=/tmp/rgcache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
arch=${ARCH:-resnet74}; start=${START:-3-3-3}; data=${DATA:-.data/cifar10-jpeg.zip}
tag=$(echo "$arch" | sed 's/^cifar_resnet/r/; s/^resnet/r/')  # resnet74 -> r74: run dirs like multilevel_r74_s0
# checkpoints every 20 epochs (about 0.1 s each, device time but not training time): a DEADLINE stop writes
# one anyway, and a lost machine takes RUNDIR with it
common="--arch $arch --data $data --epochs $E --batch-size 128 --lr 0.1 --wd 5e-4 --seed $seed --quiet --checkpoint-every 20 ${EXTRA:-}"
# multilevel's default growth epochs (37.5% of the run, then the rest split evenly), for the restart baseline
restarts=$(python3 -c "print(f'{round($E*0.375)},{round($E*(0.375+0.3125))}')")
rundir=${RUNDIR:-/tmp/resgrow_depth_runs}; mkdir -p "$rundir"  # outside $OUT: checkpoints stay, only logs go back
finished() { python3 -c "import json,sys; r=open(sys.argv[1]).read().splitlines(); sys.exit(json.loads(r[-1])['epoch'] != $E)" "$1" 2>/dev/null; }
run() {
  name=$1; shift; d=$rundir/$name
  if [[ ! -f $d/checkpoint.pt && -f $d/metrics.jsonl ]] && finished "$d/metrics.jsonl"; then
    echo "$name: finished in an earlier command (its logs came back then)"; return
  fi
  [[ -f $d/checkpoint.pt ]] && set -- "$@" --resume  # a stopped run goes on where it stopped
  limit=()
  if [[ -n ${DEADLINE:-} ]]; then
    left=$((DEADLINE - SECONDS))
    if ((left < 60)); then echo "$name: not started, ${left}s left of DEADLINE=$DEADLINE: send the same command again"; return; fi
    limit=(timeout --preserve-status -s TERM "$left")
  fi
  "${limit[@]}" python3 -m resgrow train $common --out "$d" "$@" ${STOP_AFTER:+--stop-after $STOP_AFTER} 2>&1 | tail -2
  rc=${PIPESTATUS[0]}
  [[ $rc == 0 && -z ${STOP_AFTER:-} ]] && rm -f "$d/checkpoint.pt"  # finished: nothing to resume
  [[ $rc == 143 ]] && echo "$name: stopped at DEADLINE=$DEADLINE s; the same command resumes it from $d"
  mkdir -p "$out/$name" && cp "$d"/metrics.jsonl "$d"/run.json "$out/$name/"
}
# The first process on a fresh machine pays seconds of one-time first use (the 40-epoch baseline's first
# capture took 5.85 s, the same net's in the next process 2.2 s): unreported epochs take it for every row.
# Their second epoch is reported (machine_check.jsonl) but is only a rough check: in session 8 it read 2.662 s
# and 2.578 s on two machines whose rows ran the same net at the same speed within 0.3%. Compare machines by the
# rows' steady per-phase epoch times instead (BENCHMARKS, issue 3, "Machines"; `resgrow compare` prints the
# steady epoch at the final size and warns when runs differ there by more than 1%).
if [[ ! -f /tmp/resgrow_machine_warm ]]; then
  w=$(mktemp -d)/warm-up
  python3 -m resgrow train $common --epochs 2 --out "$w" 2>&1 | tail -1 && touch /tmp/resgrow_machine_warm
  cp "$w/metrics.jsonl" "$out/machine_check.jsonl" 2>/dev/null
  python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(f'machine check (rough, +-3%): the second {r[\"blocks\"]} epoch took {r[\"epoch_seconds\"]} s')" "$w/metrics.jsonl"
fi
runs=" ${RUNS:-baseline restarts multilevel lipgrow} "
[[ $runs == *" baseline "* ]] && run baseline_${tag}_s$seed --schedule cosine
[[ $runs == *" restarts "* ]] && run baseline_restarts_${tag}_s$seed --schedule cosine_restarts --restarts "$restarts"
[[ $runs == *" multilevel "* ]] && run multilevel_${tag}_s$seed --method multilevel --start-blocks $start
[[ $runs == *" lipgrow "* ]] && run lipgrow_${tag}_s$seed --method lipgrow --start-blocks $start --lip-window "$win"
# Not in the default set: multilevel growing later (56% / 22% / 22% of the run, 90,125 of 160), the split
# that the 40-epoch per-level epoch times predict at 0.5x the baseline's time (BENCHMARKS, issue 3).
late=$(python3 -c "print(f'{round($E*0.5625)},{round($E*0.78125)}')")
[[ $runs == *" multilevel_late "* ]] && run multilevel_late_${tag}_s$seed --method multilevel --start-blocks $start --grow-at "$late"
[[ $runs == *" restarts_late "* ]] && run baseline_restarts_late_${tag}_s$seed --schedule cosine_restarts --restarts "$late"
# LipGrow's lr goes back to the peak at each grow and anneals over the rest of the run (cosine_reset), at
# epochs that depend on the run: its restart baseline takes them from a finished lipgrow row of the same seed.
if [[ $runs == *" restarts_lip "* ]]; then
  lipr=${LIP_RESTARTS:-$(python3 -c "import sys; from resgrow.report import load_run; r = load_run(sys.argv[1]); assert r.epochs == $E
print(','.join(str(x['epoch']) for x in r.grow_rows))" "benchmarks/issue3/160ep/lipgrow_${tag}_s$seed" 2>/dev/null)}
  if [[ -z $lipr ]]; then echo "restarts_lip: no finished $E-epoch lipgrow_${tag}_s$seed row in benchmarks/issue3/160ep: set LIP_RESTARTS"
  else run baseline_restarts_lip_${tag}_s$seed --schedule cosine_reset --restarts "$lipr"; fi
fi
python3 -m resgrow compare "$rundir"/*_s$seed | tee "$out/summary_s$seed.md"  # every row so far, this command's or not
