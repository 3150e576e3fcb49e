"""Compare run directories against the first one (the baseline), as DESIGN.md's protocol asks.

Per run: final-epoch test accuracy and its difference to the baseline, training wall-clock and
its ratio, training FLOPs relative to the baseline (the sum over epochs of the FLOPs per image of
the model trained in that epoch: what growth saves in arithmetic), time to accuracy (training
seconds until the test accuracy first reaches the baseline's final accuracy minus `gap` points),
growth events and the Lipschitz meter's cost. Never the best epoch: only the last one and the
first crossing of a target fixed by the baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ResgrowError


@dataclass
class RunSummary:
    name: str
    epochs: int
    test_acc: float
    train_seconds: float
    flops: float  # sum over epochs of FLOPs per image
    log: list[dict]

    @property
    def growths(self) -> list[str]:
        return [f"{e} @ep{r['epoch']}" for r in self.log for e in r.get("events", []) if e.startswith("grew")]

    @property
    def lip_seconds(self) -> float | None:
        lip = [r["lip_seconds"] for r in self.log if "lip_seconds" in r]
        return sum(lip) / len(lip) if lip else None

    def time_to(self, target: float) -> tuple[float, int] | None:
        """(training seconds, epoch) when the test accuracy first reached `target`, or None."""
        for r in self.log:
            if r.get("test_acc") is not None and r["test_acc"] >= target:
                return r["train_seconds"], r["epoch"]
        return None


def load_run(path: str | Path) -> RunSummary:
    d = Path(path)
    f = d / "metrics.jsonl"
    if not f.is_file():
        raise ResgrowError(f"{d} is not a run directory (no metrics.jsonl)")
    try:
        log = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ResgrowError(f"{f} is not valid JSON lines ({e})") from None
    if not log or "test_acc" not in log[-1]:
        raise ResgrowError(f"{f} has no evaluated final epoch yet (is the run finished?)")
    flops = sum(r.get("flops") or 0 for r in log)
    return RunSummary(d.name, log[-1]["epoch"], log[-1]["test_acc"], log[-1]["train_seconds"], flops, log)


def compare_table(runs: list[RunSummary], gap: float = 0.3) -> str:
    """Markdown table; ratios and the accuracy target are relative to runs[0]."""
    base = runs[0]
    target = base.test_acc - gap / 100
    lines = [f"| run | epochs | final test acc | vs first (points) | training s | time vs first | training FLOPs vs first "
             f"| time to {target:.2%} (s, epoch) | growths | Lipschitz s/epoch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        tta = r.time_to(target)
        flops = f"{r.flops / base.flops:.2f}x" if base.flops else "-"
        lines.append(
            f"| {r.name} | {r.epochs} | {r.test_acc:.2%} | {100 * (r.test_acc - base.test_acc):+.2f} "
            f"| {r.train_seconds:.1f} | {r.train_seconds / base.train_seconds:.2f}x | {flops} "
            f"| {f'{tta[0]:.1f} ({tta[1]})' if tta else 'not reached'} | {'; '.join(r.growths) or '-'} "
            f"| {f'{r.lip_seconds:.3f}' if r.lip_seconds is not None else '-'} |")
    return "\n".join(lines)
