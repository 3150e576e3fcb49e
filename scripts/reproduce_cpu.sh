#!/usr/bin/env bash
# One CPU table of BENCHMARKS.md on all of CIFAR-10: the fixed-size net at several budgets (its accuracy-time
# frontier) and the table's methods, every row on the CPU, one after another; then `resgrow compare --frontier`
# and its plot.
#
#   bash scripts/reproduce_cpu.sh OUTDIR TABLE [SEEDS]   # TABLE: width | wide2narrow | depth | compound | vit
#
# width:      resnet20, 30 epochs: the frontier at 10 15 20 25 30 epochs; widen (vt + lr adaptation), Net2Net's
#             widening (--widen-init net2wider --no-lr-adapt) and widen with --batch-adapt, at 30 epochs.
# wide2narrow: resnet20 as the thin net, 30 epochs in all (the method's phases scaled to 30, the wide net's
#             training included); the frontier at 10 15 20 25 30 45 60 epochs, so that the thin net is also held
#             against itself trained as long as the whole method took. Same net and budgets as width: one OUTDIR
#             can hold both tables, their frontier trained once.
# depth:      cifar_resnet50 (8-8-8) grown from 2-2-2 (START), 20 epochs: the frontier at 6 10 14 20 epochs;
#             multilevel, lipgrow (--lip-window LIP_WINDOW, default 2: its 10 of 164 epochs scaled to 20, rounded
#             up to a window that still smooths), the restart baselines (multilevel's restarts, LipGrow's where
#             its row grew), multilevel grown late, its restart baseline and itself without lr restarts (rows of
#             scripts/reproduce_depth.sh), and MG/OPT with 2 levels in two cheap configurations: mgopt_cheap
#             (--nu-pre 0 --nu-post 0 --nu-c 1 --line-search best) and mgopt_every4 (--mg-every 4); and mgopt_shared,
#             the cheapest cycle with its fine gradient also taking the fine step, its correction checked by Armijo
#             (--nu-pre 0 --nu-post 0 --nu-c 1 --line-search armijo --shared-step; taken unchecked, alpha 1 fixed, it
#             lost the net in its first epoch). An MG/OPT step costs 2 to 4 plain steps, so each MG/OPT row gets the
#             epochs that its cost (scripts/profile_mgopt.py) fits into about 14 of the fixed-size net's: 4, 8 and 5
#             of 20 (MG_EPOCHS="4 8 5" sets them): it lands inside the frontier and is held against it at equal time.
# compound:   the depth table's net, length and frontier (one OUTDIR can hold both tables); compound growth from
#             half the blocks and widths (the defaults), at the same growths (compound) and by turns
#             (compound_alternate); from START (two doublings, as the depth rows) at half the widths
#             (compound_deep, compound_deep_alternate); and from START with LipGrow's trigger (compound_lip,
#             --lip-window LIP_WINDOW). For resnet20 against the width table's frontier: ARCH=resnet20 EPOCHS=30
#             BUDGETS="10 15 20 25 30" START=1-1-1 METHOD_FLAGS=--partial-growth (3-3-3 halves only with it).
#
# vit:        vit6_128 (6 blocks of width 128, 4 heads, MLP 512), 30 epochs with --recipe vit (AdamW): the frontier at
#             10 15 20 25 30 epochs; multilevel (3 -> 6 blocks, h halved), stacking (multilevel --deepen-mode stack:
#             the stack repeated, G_stack) and widen (heads and MLP from a quarter, lr adaptation on the updates).
#
# Wall-clock ratios are honest only on an otherwise idle machine; when the rows ran on more than one machine (their
# run.json), the table compares them with `--clock epochs`: each row's time in epochs of the final net on its own
# machine (in seconds, with a warning, where a row has too few epochs at the final size to be timed so). Before every
# row the recipe appends the CPU, the thread count, torch's version, how busy the CPU was in the second before and
# the load average to OUTDIR/machine.log, and warns when it was busy (above BUSY_WARN percent, default 10: something else runs; the
# load average still counts the row before). A probe (one epoch of the table's net, batch 128) runs before the first
# row an invocation trains and at its end, so that drift shows (OUTDIR/probes.log); a finished table is not probed
# again. Each row is one `resgrow train` in OUTDIR/<row>; the same command again skips finished rows and resumes a
# stopped one. Environment: DATA (default .data/cifar10-jpeg.zip), ROWS (a subset of the table's row names:
# frontier and the method rows), EXTRA (flags for every row), METHOD_FLAGS (for the widen, wide2narrow and MG/OPT
# rows), STOP_AFTER, MAX_ROWS (train at most this many rows, then probe and table: a time-limited job ends between
# rows; the next invocation goes on); ARCH, EPOCHS, BUDGETS (and START, LIP_WINDOW for depth) change the table's
# net, length and budgets (a smaller table: to try the recipe).
set -euo pipefail
out=${1:?usage: bash scripts/reproduce_cpu.sh OUTDIR TABLE [SEEDS]}; table=${2:?TABLE: width | wide2narrow | depth}
seeds=${3:-0}
case $table in
  width) arch=${ARCH:-resnet20}; E=${EPOCHS:-30}; budgets=${BUDGETS:-"10 15 20 25 30"}
         rows="frontier widen net2wider batch" ;;
  wide2narrow) arch=${ARCH:-resnet20}; E=${EPOCHS:-30}; budgets=${BUDGETS:-"10 15 20 25 30 45 60"}
               rows="frontier wide2narrow" ;;
  depth) arch=${ARCH:-cifar_resnet50}; E=${EPOCHS:-20}; budgets=${BUDGETS:-"6 10 14 20"}; start=${START:-2-2-2}
         LIP_WINDOW=${LIP_WINDOW:-2}
         rows="frontier multilevel lipgrow restarts restarts_lip multilevel_late restarts_late multilevel_late_no_restarts
               mgopt_cheap mgopt_every4 mgopt_shared" ;;
  compound) arch=${ARCH:-cifar_resnet50}; E=${EPOCHS:-20}; budgets=${BUDGETS:-"6 10 14 20"}; start=${START:-2-2-2}
            LIP_WINDOW=${LIP_WINDOW:-2}
            rows="frontier compound compound_alternate compound_deep compound_deep_alternate compound_lip" ;;
  vit) arch=${ARCH:-vit6_128}; E=${EPOCHS:-30}; budgets=${BUDGETS:-"10 15 20 25 30"}; recipe="--recipe vit"
       rows="frontier multilevel stack widen" ;;
  *) echo "reproduce_cpu: unknown table $table (width | wide2narrow | depth | compound | vit)" >&2; exit 2 ;;
esac
total=$E; here=$(dirname "$0")
tag=$(echo "$arch" | sed 's/^cifar_resnet/r/; s/^resnet/r/')  # the depth rows' names: multilevel_r50_s0
EXTRA="--device cpu ${EXTRA:-}"
source "$here/rows.sh"

machine() {  # machine ROW: where and how busy, before a row
  python3 - "$1" "${BUSY_WARN:-10}" >> "$out/machine.log" <<'PY'
import os, sys, time
import torch
from resgrow.train.device import cpu_bf16_flags, cpu_name

def ticks():  # (all, idle) CPU time so far, from /proc/stat
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]

row, warn = sys.argv[1], float(sys.argv[2])
(a0, i0), _, (a1, i1) = ticks(), time.sleep(1), ticks()  # the second before the row: what else runs now
busy = 100 * (1 - (i1 - i0) / max(1, a1 - a0))
load = " ".join(f"{x:.2f}" for x in os.getloadavg())
print(f"{row}: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, native bf16 "
      f"{','.join(cpu_bf16_flags()) or 'none'}, CPU busy {busy:.0f}% in the second before, load average {load}")
if busy > warn:
    print(f"reproduce_cpu: warning: the CPU was {busy:.0f}% busy before {row}: its times are not comparable",
          file=sys.stderr)
PY
}

probe() {  # probe WHEN: one epoch of the table's net in a fresh directory; its img/s into probes.log
  local d; d=$(mktemp -d)
  machine "probe ($1)"
  resgrow train --arch "$arch" --data "$data" --epochs 1 --batch-size 128 --quiet --out "$d/probe" ${EXTRA} > /dev/null
  python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).readline()); print(sys.argv[2], r['img_per_s'], 'img/s')" \
    "$d/probe/metrics.jsonl" "$(date -u +%FT%TZ) $1" >> "$out/probes.log"
  rm -rf "$d"
}

trained=0
row() {  # row NAME FLAGS...: a row, with the machine logged (and the first trained row probed) first
  if finished "$out/$1"; then echo "$1: finished already"; return; fi
  if [[ -n ${MAX_ROWS:-} && $trained -ge $MAX_ROWS ]]; then echo "$1: left for the next invocation (MAX_ROWS)"; return; fi
  if [[ $trained == 0 ]]; then probe start; fi
  machine "$1"
  train "$@"
  trained=$((trained + 1))
}

for seed in ${seeds//,/ }; do
  s=(--seed "$seed")
  if want frontier; then
    for E in $budgets; do row "baseline_${arch}_${E}ep_s$seed" "${s[@]}" --epochs "$E"; done
    E=$total
  fi
  m=("${s[@]}" ${METHOD_FLAGS:-})
  if want widen; then row "widen_${arch}_s$seed" "${m[@]}" --method widen; fi
  if want net2wider; then row "net2wider_${arch}_s$seed" "${m[@]}" --method widen --widen-init net2wider --no-lr-adapt; fi
  if want batch; then row "widen_batch_${arch}_s$seed" "${m[@]}" --method widen --batch-adapt; fi
  if want wide2narrow; then row "wide2narrow_${arch}_s$seed" "${m[@]}" --method wide2narrow; fi
  if [[ $table == vit ]]; then
    if want multilevel; then row "multilevel_${arch}_s$seed" "${m[@]}" --method multilevel; fi
    if want stack; then row "stack_${arch}_s$seed" "${m[@]}" --method multilevel --deepen-mode stack; fi
  fi
  if [[ $table == depth ]]; then
    depth_rows row "$seed"
    mg=("${m[@]}" --method mgopt --levels 2)
    read -r e_cheap e_every4 e_shared <<< "${MG_EPOCHS:-4 8 5}"
    if want mgopt_cheap; then
      E=$e_cheap row "mgopt_cheap_${tag}_${e_cheap}ep_s$seed" "${mg[@]}" --epochs "$e_cheap" --nu-pre 0 --nu-post 0 \
        --nu-c 1 --line-search best
    fi
    if want mgopt_every4; then
      E=$e_every4 row "mgopt_every4_${tag}_${e_every4}ep_s$seed" "${mg[@]}" --epochs "$e_every4" --mg-every 4
    fi
    if want mgopt_shared; then  # the cheapest cycle whose fine gradient also takes the fine step
      E=$e_shared row "mgopt_shared_${tag}_${e_shared}ep_s$seed" "${mg[@]}" --epochs "$e_shared" --nu-pre 0 \
        --nu-post 0 --nu-c 1 --line-search armijo --shared-step
    fi
  fi
  c=("${m[@]}" --method compound)
  if want compound; then row "compound_${tag}_s$seed" "${c[@]}"; fi
  if want compound_alternate; then row "compound_alternate_${tag}_s$seed" "${c[@]}" --grow-order alternate; fi
  if want compound_deep; then row "compound_deep_${tag}_s$seed" "${c[@]}" --start-blocks "$start"; fi
  if want compound_deep_alternate; then
    row "compound_deep_alternate_${tag}_s$seed" "${c[@]}" --start-blocks "$start" --grow-order alternate
  fi
  if want compound_lip; then
    row "compound_lip_${tag}_s$seed" "${c[@]}" --start-blocks "$start" --trigger lipschitz --lip-window "$LIP_WINDOW"
  fi
done
if [[ $trained -gt 0 ]]; then probe end; fi

methods=()  # every row but the frontier's own (the restart baselines are held against it too)
for d in "$out"/*_s*; do
  [[ -f $d/metrics.jsonl && $(basename "$d") != baseline_"${arch}"_*ep_s* ]] && methods+=("$d")
done
runs=("$out"/baseline_"${arch}"_*ep_s* "${methods[@]}")
# rows timed on more than one machine (a table or a row that outlived its machine) compare on the epoch clock
machines=$(python3 -c 'import sys; from resgrow.report.compare import load_run
print(len({r.machine_at(x["epoch"]) for r in map(load_run, sys.argv[1:]) for x in r.log}))' "${runs[@]}")
if [[ $machines -gt 1 ]] && resgrow compare --frontier --clock epochs --plot "$out/frontier.png" "${runs[@]}" \
     > "$out/frontier.md"; then
  cat "$out/frontier.md"
else
  resgrow compare --frontier --plot "$out/frontier.png" "${runs[@]}" | tee "$out/frontier.md"
fi
