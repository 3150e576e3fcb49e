"""Per-epoch logs of a run: metrics.jsonl (every field) and metrics.csv (the main columns)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

CSV_COLUMNS = ["epoch", "train_seconds", "train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc",
               "lr", "params", "flops", "blocks", "widths", "img_per_s", "events"]


class MetricsLog:
    def __init__(self, out_dir: str | Path):
        self.jsonl = Path(out_dir) / "metrics.jsonl"
        self.csv = Path(out_dir) / "metrics.csv"

    def rows(self) -> list[dict]:
        if not self.jsonl.is_file():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def truncate(self, last_epoch: int) -> None:
        """Drop rows after `last_epoch`: a run resumed from that checkpoint writes them again."""
        keep = [r for r in self.rows() if r["epoch"] <= last_epoch]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in keep))
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in keep:
                w.writerow(_flat(r))

    def append(self, row: dict) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        new = not self.csv.is_file()
        with open(self.csv, "a", newline="") as f:
            w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(_flat(row))


def _flat(row: dict) -> dict:
    r = dict(row)
    r["events"] = "; ".join(row.get("events", []))
    return r
