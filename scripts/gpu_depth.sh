#!/usr/bin/env bash
# Issue 3: baseline resnet74 (cosine and cosine with the multilevel restarts), multilevel and lipgrow
# (both 3-3-3 -> 12-12-12), one after another, same data pipeline, optimizer and epochs.
# Usage: bash scripts/gpu_depth.sh OUTDIR EPOCHS SEEDS [LIP_WINDOW]      (SEEDS: 0, or 0,1 for both seeds' rows)
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
# TOGETHER=1 trains the command's rows at once in one process (`resgrow together`: a thread and a CUDA
# stream each), for rows whose accuracy is wanted, not their time (restart baselines): their clocks count
# each other. It first trains PROBE epochs (default 3) together, then compares the together epoch with the
# machine check's epoch alone; unless together is at least 15% faster in all (TOGETHER_MIN=1.15) and, with
# BUDGET=SECONDS, finishes every row within that many seconds from this command's start, the rows go on one by one.
# So do they when the probe has not ended after PROBE_LIMIT seconds (default 240): a hang costs minutes, not the package.
set -uo pipefail
out=${1:-/tmp/depth}; E=${2:-160}; seeds=${3:-0}; win=${4:-10}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=${RESGROW_CACHE:-/tmp/rgcache}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
arch=${ARCH:-resnet74}; start=${START:-3-3-3}; data=${DATA:-.data/cifar10-jpeg.zip}
tag=$(echo "$arch" | sed 's/^cifar_resnet/r/; s/^resnet/r/')  # resnet74 -> r74: run dirs like multilevel_r74_s0
# checkpoints every 20 epochs (about 0.1 s each, device time but not training time): a DEADLINE stop writes
# one anyway, and a lost machine takes RUNDIR with it
common="--arch $arch --data $data --epochs $E --batch-size 128 --lr 0.1 --wd 5e-4 --quiet --checkpoint-every 20 ${EXTRA:-}"
# multilevel's default growth epochs (37.5% of the run, then the rest split evenly), for the restart baseline
restarts=$(python3 -c "print(f'{round($E*0.375)},{round($E*(0.375+0.3125))}')")
rundir=${RUNDIR:-/tmp/resgrow_depth_runs}; mkdir -p "$rundir"  # outside $OUT: checkpoints stay, only logs go back
finished() { python3 -c "import json,sys; r=open(sys.argv[1]).read().splitlines(); sys.exit(json.loads(r[-1])['epoch'] != $E)" "$1" 2>/dev/null; }
limit=()
time_left() {  # sets limit=(timeout ...) for the next process; fails when under a minute of DEADLINE is left
  limit=()
  [[ -z ${DEADLINE:-} ]] && return 0
  left=$((DEADLINE - SECONDS))
  ((left < 60)) && return 1
  limit=(timeout --preserve-status -s TERM -k 20 "$left")  # -k: a process that ignores TERM (a hang) is killed 20 s later
}
names=(); argss=()
row() { names+=("$1"); shift; argss+=("$*"); }  # a row of this command: its name, then its own flags
# the flags of row i as this process must run it: common ones, --resume if a checkpoint waits, the stop
flags() { local d=$rundir/${names[$1]}; echo "$common --out $d ${argss[$1]}$([[ -f $d/checkpoint.pt ]] && echo " --resume")${2:+ --stop-after $2}"; }
done_row() {  # after a process: a finished row needs no checkpoint; its logs go to $OUT either way
  local d=$rundir/${names[$1]}
  [[ -f $d/metrics.jsonl ]] && finished "$d/metrics.jsonl" && rm -f "$d/checkpoint.pt"
  [[ -f $d/run.json ]] && mkdir -p "$out/${names[$1]}" && cp "$d"/metrics.jsonl "$d"/run.json "$out/${names[$1]}/"
}
run_alone() {
  local i=$1 name=${names[$1]} d=$rundir/${names[$1]}
  if ! time_left; then echo "$name: not started, ${left}s left of DEADLINE=$DEADLINE: send the same command again"; return; fi
  "${limit[@]}" python3 -m resgrow train $(flags "$i" "${STOP_AFTER:-}") 2>&1 | tail -2
  rc=${PIPESTATUS[0]}
  [[ $rc == 143 ]] && echo "$name: stopped at DEADLINE=$DEADLINE s; the same command resumes it from $d"
  done_row "$i"
}
run_together() {  # rows $@ in one process; returns its exit code (143: stopped by DEADLINE, or by cap=SECONDS)
  local cmds=() i
  for i in "$@"; do cmds+=("$(flags "$i" "${stop:-}")"); done
  time_left || { echo "together: not started, ${left}s left of DEADLINE=$DEADLINE: send the same command again"; return 143; }
  if [[ -n ${cap:-} ]] && { [[ ${#limit[@]} == 0 ]] || ((cap < left)); }; then
    limit=(timeout --preserve-status -s TERM -k 20 "$cap")
  fi
  "${limit[@]}" python3 -m resgrow together "${cmds[@]}" 2>&1 | tail -$((2 * $# + 2))
  local rc=${PIPESTATUS[0]}
  for i in "$@"; do done_row "$i"; done
  return "$rc"
}
# Together pays when the rows' epochs, trained at once, take less than their epochs alone: the probe's last
# together epoch against the machine check's second epoch alone (the same net for restart baselines; for
# growth rows a rough guide). Below 1.15x it does not. With BUDGET (seconds this package may still use, from
# this command's start, all commands together) it must also finish every row in time: otherwise one by one
# secures at least the first row.
worth_together() {
  python3 - "${BUDGET:+$((BUDGET - SECONDS))}" "$@" <<'PY'
import json, os, sys
left, check, dirs = (float(sys.argv[1]) if sys.argv[1] else None), sys.argv[2], sys.argv[3:]
last = lambda path: json.loads(open(path).read().splitlines()[-1])
alone = last(check)["epoch_seconds"]
rows = [last(d + "/metrics.jsonl") for d in dirs]
if len({r["epoch"] for r in rows}) > 1:  # a row that had trained further sat the probe out: nothing was measured together
    sys.exit(print(f"together: the rows stand at epochs {[r['epoch'] for r in rows]}, so the probe measured no pair") or 1)
together = max(r["epoch_seconds"] for r in rows)
speedup = len(rows) * alone / together
wall = max(r["epoch_seconds"] + r.get("eval_seconds", 0) + r.get("method_seconds", 0) for r in rows)
need = max(json.load(open(d + "/run.json"))["config"]["epochs"] - r["epoch"] for d, r in zip(dirs, rows)) * wall
print(f"together: {len(rows)} rows at {together:.3f} s per epoch each, alone {alone:.3f} s: {speedup:.2f}x the work "
      f"per second; about {need:.0f} s more for all" + (f", {left:.0f} s of BUDGET left" if left is not None else ""))
sys.exit(0 if speedup >= float(os.environ.get("TOGETHER_MIN", 1.15)) and (left is None or need <= left) else 1)
PY
}
# The first process on a fresh machine pays seconds of one-time first use (the 40-epoch baseline's first
# capture took 5.85 s, the same net's in the next process 2.2 s): unreported epochs take it for every row.
# Their second epoch is reported (machine_check.jsonl) but is only a rough check: in session 8 it read 2.662 s
# and 2.578 s on two machines whose rows ran the same net at the same speed within 0.3%. Compare machines by the
# rows' steady per-phase epoch times instead (BENCHMARKS, issue 3, "Machines"; `resgrow compare` prints the
# steady epoch at the final size and warns when runs differ there by more than 1%).
# It lives in RUNDIR, which a fresh machine does not have (TOGETHER's probe compares with it).
if [[ ! -f $rundir/machine_check.jsonl ]]; then
  w=$(mktemp -d)/warm-up
  python3 -m resgrow train $common --epochs 2 --out "$w" 2>&1 | tail -1
  cp "$w/metrics.jsonl" "$out/machine_check.jsonl" 2>/dev/null && cp "$w/metrics.jsonl" "$rundir/machine_check.jsonl"
  python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(f'machine check (rough, +-3%): the second {r[\"blocks\"]} epoch took {r[\"epoch_seconds\"]} s')" "$w/metrics.jsonl"
fi
runs=" ${RUNS:-baseline restarts multilevel lipgrow} "
# Not in the default set: multilevel growing later (56% / 22% / 22% of the run, 90,125 of 160), the split
# that the 40-epoch per-level epoch times predict at 0.5x the baseline's time (BENCHMARKS, issue 3).
late=$(python3 -c "print(f'{round($E*0.5625)},{round($E*0.78125)}')")
for seed in ${seeds//,/ }; do
  s="--seed $seed"
  [[ $runs == *" baseline "* ]] && row baseline_${tag}_s$seed $s --schedule cosine
  [[ $runs == *" restarts "* ]] && row baseline_restarts_${tag}_s$seed $s --schedule cosine_restarts --restarts "$restarts"
  [[ $runs == *" multilevel "* ]] && row multilevel_${tag}_s$seed $s --method multilevel --start-blocks $start
  [[ $runs == *" lipgrow "* ]] && row lipgrow_${tag}_s$seed $s --method lipgrow --start-blocks $start --lip-window "$win"
  [[ $runs == *" multilevel_late "* ]] && row multilevel_late_${tag}_s$seed $s --method multilevel --start-blocks $start --grow-at "$late"
  [[ $runs == *" restarts_late "* ]] && row baseline_restarts_late_${tag}_s$seed $s --schedule cosine_restarts --restarts "$late"
  # LipGrow's lr goes back to the peak at each grow and anneals over the rest of the run (cosine_reset), at
  # epochs that depend on the run: its restart baseline takes them from a finished lipgrow row of the same seed.
  if [[ $runs == *" restarts_lip "* ]]; then
    lipr=${LIP_RESTARTS:-$(python3 scripts/growth_epochs.py "benchmarks/issue3/160ep/lipgrow_${tag}_s$seed" "$E" 2>/dev/null)}
    if [[ -z $lipr ]]; then echo "restarts_lip: no finished $E-epoch lipgrow_${tag}_s$seed row in benchmarks/issue3/160ep: set LIP_RESTARTS"
    else row baseline_restarts_lip_${tag}_s$seed $s --schedule cosine_reset --restarts "$lipr"; fi
  fi
done
todo=()
for i in "${!names[@]}"; do
  d=$rundir/${names[$i]}
  if [[ ! -f $d/checkpoint.pt && -f $d/metrics.jsonl ]] && finished "$d/metrics.jsonl"; then
    echo "${names[$i]}: finished in an earlier command (its logs came back then)"
  else todo+=("$i"); fi
done
if [[ -n ${TOGETHER:-} && ${#todo[@]} -ge 2 ]]; then
  # The probe's verdict is kept in RUNDIR, so that the command sent again after a DEADLINE goes on the same way.
  verdict=$rundir/together_verdict; mode=together
  if [[ -f $verdict ]]; then
    mode=$(cat "$verdict")
  elif [[ -z ${STOP_AFTER:-} ]]; then
    # A probe that hangs (together has not run on a GPU yet) must not take the package with it: it gets
    # PROBE_LIMIT seconds (three epochs of two resnet74 rows take about 20 s), then the rows go on one by one.
    cap=${PROBE_LIMIT:-240} stop=${PROBE:-3} run_together "${todo[@]}"; rc=$?
    dirs=(); for i in "${todo[@]}"; do dirs+=("$rundir/${names[$i]}"); done
    if [[ $rc == 143 ]] && ! time_left; then
      mode=wait; echo "together: the probe did not finish by DEADLINE=$DEADLINE s: send the same command again"
    else
      [[ $rc == 143 || $rc == 137 ]] && echo "together: the probe did not finish within PROBE_LIMIT=${PROBE_LIMIT:-240} s"
      worth=1
      if [[ $rc == 0 ]]; then  # the measured gain goes to $OUT too, for BENCHMARKS
        worth_together "$rundir/machine_check.jsonl" "${dirs[@]}" | tee "$out/together_probe.txt"; worth=${PIPESTATUS[0]}
      fi
      [[ $worth != 0 ]] && { mode=alone; echo "together: the rows go on one by one (probe exit code $rc)"; }
      echo "$mode" > "$verdict"
    fi
  fi
  if [[ $mode == together ]]; then
    stop=${STOP_AFTER:-} run_together "${todo[@]}"; rc=$?
    [[ $rc == 143 ]] && echo "together: stopped at DEADLINE=${DEADLINE:-} s; the same command resumes the rows from $rundir"
    [[ $rc != 0 && $rc != 143 ]] && { echo "together: failed (exit code $rc); the rows go on one by one"; mode=alone; echo alone > "$verdict"; }
  fi
  if [[ $mode == alone ]]; then for i in "${todo[@]}"; do run_alone "$i"; done; fi
else
  for i in "${todo[@]}"; do run_alone "$i"; done
fi
for seed in ${seeds//,/ }; do
  ls -d "$rundir"/*_s$seed >/dev/null 2>&1 && python3 -m resgrow compare "$rundir"/*_s$seed | tee "$out/summary_s$seed.md"  # every row so far
done
