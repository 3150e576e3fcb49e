# Shared by the reproduce_*.sh recipes (sourced, not run): one `resgrow train` per row in OUTDIR/<row>, skipped when
# finished, resumed when stopped; then the table. The recipe sets out, arch, E (epochs) and rows (its row names,
# space-separated, or ROWS) before sourcing; this sets the data (DATA), `common` (the flags of every row) and `want`.

data=${DATA:-.data/cifar10-jpeg.zip}
[[ -e $data || $data == cifar10-sample ]] || { echo "$(basename "$0" .sh): no data at $data (set DATA)" >&2; exit 2; }
mkdir -p "$out"
recipe=${recipe:-"--lr 0.1 --wd 5e-4"}  # the ResNet tables' SGD settings; a recipe sets its own (--recipe vit)
common=(--arch "$arch" --data "$data" --epochs "$E" --batch-size 128 $recipe --quiet ${EXTRA:-})
rows=" ${ROWS:-$rows} "
want() { [[ $rows == *" $1 "* ]]; }  # is row $1 asked for

finished() {  # the run logged its last epoch
  [[ -f $1/metrics.jsonl ]] && python3 -c "import json,sys; sys.exit(json.loads(open(sys.argv[1]).readlines()[-1])['epoch'] != $E)" "$1/metrics.jsonl"
}

warmed=
train() {  # train NAME FLAGS...: one row, skipped when finished, resumed when stopped
  local name=$1 d=$out/$1; shift
  if finished "$d"; then echo "$name: finished already"; return; fi
  if [[ -z $warmed ]] && command -v nvidia-smi > /dev/null; then  # a fresh GPU's first process pays one-time
    # set-up (seconds): an unreported epoch takes it, not the first row
    resgrow train "${common[@]}" --epochs 1 --out "$(mktemp -d)/warm-up" > /dev/null 2>&1 || true
    warmed=1
  fi
  local resume=(); [[ -f $d/checkpoint.pt ]] && resume=(--resume)
  echo "$name: training${resume:+ (resumed)}"
  resgrow train "${common[@]}" --out "$d" "$@" "${resume[@]}" ${STOP_AFTER:+--stop-after "$STOP_AFTER"}
}

table() {  # table BASELINE_PREFIX: every row so far, the baselines first, to OUTDIR/summary.md and its plot
  local runs=() d
  for d in "$out"/"$1"_s* "$out"/*_s*; do
    if [[ -f $d/metrics.jsonl && " ${runs[*]} " != *" $d "* ]]; then runs+=("$d"); fi
  done
  resgrow compare --seeds --plot "$out/accuracy_vs_time.png" "${runs[@]}" | tee "$out/summary.md"
}

depth_rows() {  # depth_rows RUN SEED: the depth-growth rows (reproduce_depth.sh, and reproduce_cpu.sh's depth table),
  # each started by RUN (train, or the CPU recipe's row, which logs the machine first). Needs tag, start, E, here;
  # LIP_WINDOW. Multilevel grows at 37.5% and 68.75% of the run (its default) or, "late", at 56% and 78% (also
  # without its lr restarts: multilevel_late_no_restarts).
  local run=$1 seed=$2 lip restarts late
  local s=(--seed "$2")
  restarts=$(python3 -c "print(f'{round($E*0.375)},{round($E*0.6875)}')")
  late=$(python3 -c "print(f'{round($E*0.5625)},{round($E*0.78125)}')")
  if want restarts; then $run "baseline_restarts_${tag}_s$seed" "${s[@]}" --schedule cosine_restarts --restarts "$restarts"; fi
  if want lipgrow; then
    $run "lipgrow_${tag}_s$seed" "${s[@]}" --method lipgrow --start-blocks "$start" --lip-window "${LIP_WINDOW:-10}"
  fi
  if want restarts_lip; then  # LipGrow's lr: back to the peak where its row grew, then annealing to the end
    if lip=$(python3 "$here/growth_epochs.py" "$out/lipgrow_${tag}_s$seed" "$E" 2> /dev/null); then
      $run "baseline_restarts_lip_${tag}_s$seed" "${s[@]}" --schedule cosine_reset --restarts "$lip"
    else echo "baseline_restarts_lip_${tag}_s$seed: waits for a finished lipgrow_${tag}_s$seed row"; fi
  fi
  if want multilevel; then $run "multilevel_${tag}_s$seed" "${s[@]}" --method multilevel --start-blocks "$start"; fi
  if want multilevel_late; then
    $run "multilevel_late_${tag}_s$seed" "${s[@]}" --method multilevel --start-blocks "$start" --grow-at "$late"
  fi
  if want restarts_late; then
    $run "baseline_restarts_late_${tag}_s$seed" "${s[@]}" --schedule cosine_restarts --restarts "$late"
  fi
  if want multilevel_late_no_restarts; then  # grown late, the lr one cosine over the run as the fixed-size net's
    $run "multilevel_late_no_restarts_${tag}_s$seed" "${s[@]}" --method multilevel --start-blocks "$start" \
      --grow-at "$late" --no-lr-restarts
  fi
}
