#!/usr/bin/env bash
# 2 processes x batch 128 against 1 process x batch 256 (and that at seed 1), 3 epochs on the CPU.
# Usage: benchmarks/distributed/ranks_vs_one/run.sh MINI_ZIP   (from anywhere; resgrow and torchrun on PATH)
cd "$(dirname "$0")/../../.."
D=${1:?usage: run.sh MINI_ZIP}
O=benchmarks/distributed/ranks_vs_one
rm -rf $O; mkdir -p $O
C="--arch cifar_resnet14 --epochs 3 --device cpu --data $D --quiet --precision fp32"
for m in "baseline" "multilevel --start-blocks 1-1-1"; do
  n=${m%% *}
  torchrun --nproc_per_node 2 -m resgrow train $C --method $m --batch-size 128 --out $O/${n}_2x128 > /dev/null 2>&1
  resgrow train $C --method $m --batch-size 256 --out $O/${n}_1x256
  resgrow train $C --method $m --batch-size 256 --seed 1 --out $O/${n}_1x256_seed1
done
rm -f $O/*/checkpoint*.pt
for n in baseline multilevel; do
python3 - $O $n <<'PY'
import json, sys
o, n = sys.argv[1], sys.argv[2]
rows = {k: [json.loads(l)["train_loss"] for l in open(f"{o}/{n}_{k}/metrics.jsonl")] for k in ("2x128", "1x256", "1x256_seed1")}
d = lambda a, b: max(abs(x - y) / y for x, y in zip(rows[a], rows[b]))
print(f"{n}: train losses 2x128 {[round(x, 4) for x in rows['2x128']]}, 1x256 {[round(x, 4) for x in rows['1x256']]}, "
      f"1x256 seed 1 {[round(x, 4) for x in rows['1x256_seed1']]}; 2x128 against 1x256: up to {d('2x128', '1x256'):.1%}; "
      f"seed 1 against seed 0: up to {d('1x256_seed1', '1x256'):.1%}")
PY
done
