# Shared by the reproduce_*.sh recipes (sourced, not run): one `resgrow train` per row in OUTDIR/<row>, skipped when
# finished, resumed when stopped; then the table. The recipe sets out, arch, E (epochs) and rows (its row names,
# space-separated, or ROWS) before sourcing; this sets the data (DATA), `common` (the flags of every row) and `want`.

data=${DATA:-.data/cifar10-jpeg.zip}
[[ -e $data || $data == cifar10-sample ]] || { echo "$(basename "$0" .sh): no data at $data (set DATA)" >&2; exit 2; }
mkdir -p "$out"
common=(--arch "$arch" --data "$data" --epochs "$E" --batch-size 128 --lr 0.1 --wd 5e-4 --quiet ${EXTRA:-})
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
