"""Summarise run directories into a markdown table, the first run being the baseline.

Per run: final-epoch test accuracy and its difference to the baseline, training wall-clock and its
ratio, training FLOPs (sum over epochs of the FLOPs per image of the model trained in that epoch)
relative to the baseline, time to accuracy (training seconds until the test accuracy first reaches
the baseline's final accuracy minus --tta-gap points, as DESIGN.md's protocol asks), growth events
and the Lipschitz meter's cost.
Usage: python scripts/summarize.py [--tta-gap 0.3] RUN [RUN ...]
"""

import argparse
import json
from pathlib import Path


def load(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]


def time_to(log: list[dict], target: float):
    for r in log:
        if r.get("test_acc") is not None and r["test_acc"] >= target:
            return r["train_seconds"], r["epoch"]
    return None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tta-gap", type=float, default=0.3, help="points below the baseline's final accuracy")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args(argv)
    logs = [(Path(d).name, load(Path(d))) for d in a.runs]
    base = logs[0][1]
    base_acc, base_sec = base[-1]["test_acc"], base[-1]["train_seconds"]
    base_flops = sum(r["flops"] for r in base)
    target = base_acc - a.tta_gap / 100
    print(f"| run | epochs | final test acc | vs first | training s | ratio to first | training FLOPs ratio "
          f"| time to {target:.2%} (s, epoch) | growths | Lipschitz s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, log in logs:
        last = log[-1]
        grows = [f"{e} @ep{r['epoch']}" for r in log for e in r.get("events", []) if e.startswith("grew")]
        lip = [r["lip_seconds"] for r in log if "lip_seconds" in r]
        tta = time_to(log, target)
        tta_s = f"{tta[0]:.1f} ({tta[1]})" if tta else "not reached"
        lip_s = f"{sum(lip) / len(lip):.3f}" if lip else "-"
        flops = sum(r["flops"] for r in log) / base_flops
        print(f"| {name} | {last['epoch']} | {last['test_acc']:.2%} | {100 * (last['test_acc'] - base_acc):+.2f} "
              f"| {last['train_seconds']:.1f} | {last['train_seconds'] / base_sec:.2f}x | {flops:.2f}x | {tta_s} "
              f"| {'; '.join(grows) or '-'} | {lip_s} |")


if __name__ == "__main__":
    main()
