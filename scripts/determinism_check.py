"""Does --deterministic make two runs of one seed identical, and do they differ without it?

Trains ARCH for EPOCHS twice without `--deterministic` and then twice with it (seed 0; in that order, as
the flag sets process-wide switches), then prints, per pair, whether every epoch's train loss and test
accuracy are equal. Exit code 1 when the deterministic pair differs. On a GPU the plain pair is expected
to differ (cuDNN's autotuned kernels); on a CPU it does not.

    python scripts/determinism_check.py --data .data/cifar10-jpeg.zip --out runs/determinism
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resgrow.cli import main as resgrow


def epochs_of(run: Path) -> list[tuple]:
    rows = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return [(r["train_loss"], r.get("test_acc")) for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="a new folder for the four runs")
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    same = {}
    for mode, flags in (("plain", []), ("deterministic", ["--deterministic"])):
        runs = [Path(a.out) / f"{mode}_{k}" for k in "ab"]
        for run in runs:
            code = resgrow(["train", "--arch", a.arch, "--data", a.data, "--epochs", str(a.epochs), "--seed", "0",
                            "--quiet", "--out", str(run), *flags])
            if code:
                return code
        first, second = map(epochs_of, runs)
        same[mode] = first == second
        print(f"{mode}: identical {same[mode]}; final test accuracy {first[-1][1]:.2%} and {second[-1][1]:.2%}")
    return 0 if same["deterministic"] else 1


if __name__ == "__main__":
    sys.exit(main())
