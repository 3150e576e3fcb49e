"""Summarise run directories into a markdown table: final-epoch test accuracy, training time,
ratio to the first run (the baseline), growth events. Usage: python scripts/summarize.py RUN [RUN ...]"""

import json
import sys
from pathlib import Path


def main(dirs):
    rows = []
    for d in map(Path, dirs):
        log = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        last = log[-1]
        grows = [f"{e} @ep{r['epoch']}" for r in log for e in r.get("events", []) if e.startswith("grew")]
        lip = [r["lip_seconds"] for r in log if "lip_seconds" in r]
        rows.append((d.name, last["epoch"], last.get("test_acc", float("nan")), last["train_seconds"], grows,
                     sum(lip) / len(lip) if lip else None))
    base = rows[0][3]
    print("| run | epochs | final test acc | training s | ratio to first | growths | Lipschitz s/epoch |")
    print("|---|---|---|---|---|---|---|")
    for name, ep, acc, sec, grows, lip in rows:
        lip_s = f"{lip:.3f}" if lip is not None else "-"
        print(f"| {name} | {ep} | {acc:.2%} | {sec:.1f} | {sec / base:.2f}x | {'; '.join(grows) or '-'} | {lip_s} |")


if __name__ == "__main__":
    main(sys.argv[1:])
