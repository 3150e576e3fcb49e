"""Evaluation on a run's fixed splits: loss and accuracy, summed over processes, with one host sync."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate(model: nn.Module, loader, amp: bool, ranks=None) -> tuple[float, float]:
    """Mean loss and accuracy over a fixed split (its shards summed over `ranks`); one host sync at the end."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else nullcontext()
    with ctx:
        for x, y in loader:
            out = model(x)
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    sums = torch.stack([loss_sum, correct.double(), torch.tensor(float(len(loader)), dtype=torch.float64, device=dev)])
    loss, c, n = (ranks.sum_(sums) if ranks is not None else sums).tolist()
    return loss / n, c / n


class Evaluator:
    """A run's test split (and validation split, if any), evaluated into a log row's fields. `lock`: held while
    evaluating, where runs trained together must not meet new shapes inside another run's capture."""

    def __init__(self, test, val=None, ranks=None, lock=None):
        self.test, self.val, self.ranks, self.lock = test, val, ranks, lock or nullcontext()

    def __call__(self, model: nn.Module, amp: bool) -> dict:
        row = {}
        with self.lock:
            row["test_loss"], row["test_acc"] = evaluate(model, self.test, amp, self.ranks)
            if self.val is not None:
                row["val_loss"], row["val_acc"] = evaluate(model, self.val, amp, self.ranks)
        return row
