#!/usr/bin/env bash
# Does --deterministic make two GPU runs of one seed identical (and without it, do they differ)?
# resnet20, 3 epochs, seed 0, twice each way; prints the per-epoch train loss and test accuracy of
# each run and whether the pairs match exactly. About 1 minute. Usage: bash scripts/gpu_determinism.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/det}; mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 RESGROW_CACHE=/tmp/rgcache
for mode in det plain; do
  flag=$([[ $mode == det ]] && echo --deterministic || true)
  for r in a b; do
    python3 -m resgrow train --arch resnet20 --data "${DATA:-.data/cifar10-jpeg.zip}" --epochs "${EPOCHS:-3}" --seed 0 $flag \
      --out "$out/${mode}_$r" --quiet 2>&1 | tail -1
  done
done
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = lambda d: [(r["train_loss"], r["test_acc"]) for r in map(json.loads, (out / d / "metrics.jsonl").read_text().splitlines())]
for mode in ("det", "plain"):
    a, b = rows(f"{mode}_a"), rows(f"{mode}_b")
    secs = [json.loads((out / f"{mode}_{r}" / "metrics.jsonl").read_text().splitlines()[-1])["train_seconds"] for r in "ab"]
    print(f"{mode}: identical={a == b}  train s {secs}\n  a={a}\n  b={b}")
PY
rm -f "$out"/*/checkpoint.pt
