"""Per-epoch logs of a run: metrics.jsonl (every field), metrics.csv (the main columns) and, optionally,
TensorBoard scalars in tb/ (`pip install resgrow[tensorboard]`)."""

from __future__ import annotations

import csv
import importlib
import io
import json
from pathlib import Path

from .. import atomic
from ..errors import ResgrowError
from ..events import event_text

CSV_COLUMNS = ["epoch", "train_seconds", "train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc",
               "lr", "params", "flops", "grad_equivalents", "blocks", "widths", "img_per_s", "events"]


TB_SCALARS = ["train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc", "lr", "img_per_s",
              "train_seconds", "params", "flops"]


def check_tensorboard() -> None:
    try:
        for name in ("tensorboard", "torch.utils.tensorboard"):
            importlib.import_module(name)
    except ImportError:
        raise ResgrowError("--tensorboard needs the tensorboard package: pip install 'resgrow[tensorboard]'") from None


class MetricsLog:
    """`method_columns`: the method's own per-epoch numbers (e.g. LipGrow's lip_score), added to the
    CSV before `events` and to TensorBoard."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = False, method_columns: tuple = ()):
        self.columns = CSV_COLUMNS[:-1] + [c for c in method_columns if c not in CSV_COLUMNS] + CSV_COLUMNS[-1:]
        self.scalars = TB_SCALARS + [c for c in method_columns if c not in TB_SCALARS]
        self.jsonl = Path(out_dir) / "metrics.jsonl"
        self.csv = Path(out_dir) / "metrics.csv"
        self.tb_dir = Path(out_dir) / "tb" if tensorboard else None
        self._tb = None

    def _writer(self, purge_step: int | None = None):
        if self.tb_dir is not None and self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run drops the events of the epochs it trains again
            self._tb = SummaryWriter(str(self.tb_dir), purge_step=purge_step)
        return self._tb

    def rows(self, partial_tail: bool = False) -> list[dict]:
        """The logged rows. With `partial_tail`, an undecodable last line is dropped: a process killed
        while appending leaves half a row, always of an epoch after its last checkpoint."""
        if not self.jsonl.is_file():
            return []
        lines = [line for line in self.jsonl.read_text().splitlines() if line.strip()]
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if partial_tail and i == len(lines) - 1:
                    break
                raise
        return out

    def truncate(self, last_epoch: int) -> None:
        """Drop rows after `last_epoch` (a run resumed from that checkpoint writes them again).
        Both files are replaced atomically: a kill here leaves the old log or the new one, never half."""
        try:
            keep = [r for r in self.rows(partial_tail=True) if r["epoch"] <= last_epoch]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ResgrowError(f"{self.jsonl} is damaged before its last line ({e}); the checkpoint is intact: move "
                               "the file aside to resume without the earlier rows") from None
        self._writer(purge_step=last_epoch + 1)
        atomic.write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in keep))
        out = io.StringIO()
        w = csv.DictWriter(out, self.columns, extrasaction="ignore")
        w.writeheader()
        for r in keep:
            w.writerow(_flat(r))
        atomic.write_text(self.csv, out.getvalue())

    def append(self, row: dict) -> None:
        try:
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
            new = not self.csv.is_file()
            with open(self.csv, "a", newline="") as f:
                w = csv.DictWriter(f, self.columns, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(_flat(row))
        except OSError as e:
            raise ResgrowError(f"could not write the log in {self.jsonl.parent} ({e.strerror or e}); the last "
                               "checkpoint is intact: fix the cause and continue with --resume") from None
        tb = self._writer()
        if tb is not None:
            # x = epoch; the walltime is the run's training clock, so TensorBoard's "relative"
            # axis shows accuracy against training seconds (what growth methods save).
            for k in self.scalars:
                if isinstance(row.get(k), (int, float)):
                    tb.add_scalar(k, row[k], row["epoch"], walltime=row["train_seconds"])
            for e in row.get("events", []):
                tb.add_text("events", event_text(e), row["epoch"], walltime=row["train_seconds"])
            tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _flat(row: dict) -> dict:
    r = dict(row)
    r["events"] = "; ".join(map(event_text, row.get("events", [])))
    return r
