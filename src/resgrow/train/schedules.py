"""Learning-rate schedules as functions of fractional epochs: step, cosine, cosine with restarts
(each cycle annealing to the next restart, as Chang et al.'s multilevel training) or with resets
(each annealing to the end of the run, as LipGrow, which cannot know its next grow), all with optional
linear warm-up. A method may add restart points while training runs."""

from __future__ import annotations

import math

from ..config import COSINES, SCHEDULES  # noqa: F401 - named with the settings
from ..errors import ResgrowError


def check_schedule(kind: str) -> None:
    if kind not in SCHEDULES:
        raise ResgrowError(f"unknown schedule {kind!r}; known: {', '.join(SCHEDULES)}")


class Schedule:
    """lr(t) for t in [0, epochs), t = epoch + step / steps_per_epoch.

    cosine: from `lr` to `eta_min` over the run. cosine_restarts: the same, restarted at every
    epoch in `restarts` (each segment anneals to the next restart, the last to the end).
    cosine_reset: back to `lr` at every epoch in `restarts`, each time annealing over the rest of
    the run (LipGrow's schedule; with the epochs of a LipGrow run's grows, its fixed-size baseline).
    `add_restart(t)` adds one while training; it goes into checkpoints via state_dict().
    """

    def __init__(self, kind: str, lr: float, epochs: int, *, eta_min: float = 0.0, warmup: float = 0.0,
                 milestones=(), gamma: float = 0.1, restarts=()):
        check_schedule(kind)
        if epochs < 1 or lr <= 0:
            raise ResgrowError(f"need epochs >= 1 and lr > 0 (got epochs={epochs}, lr={lr})")
        self.kind, self.lr, self.epochs = kind, lr, epochs
        self.eta_min, self.warmup, self.gamma = eta_min, warmup, gamma
        self.milestones = sorted(milestones) if milestones else [0.5 * epochs, 0.75 * epochs]
        self.restarts: list[float] = []
        for r in restarts:
            self.add_restart(r)

    def add_restart(self, t: float, reset: bool = False) -> None:
        """Restart the cosine at epoch t; a plain cosine becomes cosine_reset with `reset` (the new
        cycle anneals to the end of the run), else cosine_restarts (earlier cycles end at t)."""
        if not 0 < t < self.epochs:
            raise ResgrowError(f"restart at epoch {t} is outside the run (0, {self.epochs})")
        if self.kind == "cosine":
            self.kind = "cosine_reset" if reset else "cosine_restarts"
        elif self.kind not in COSINES:
            raise ResgrowError(f"schedule {self.kind!r} has no restarts; use cosine or cosine_restarts")
        if t not in self.restarts:
            self.restarts = sorted(self.restarts + [float(t)])

    def __call__(self, t: float) -> float:
        if self.kind == "constant":
            lr = self.lr
        elif self.kind == "step":
            lr = self.lr * self.gamma ** sum(t >= m for m in self.milestones)
        else:
            start, end = 0.0, float(self.epochs)
            for r in self.restarts:
                if r <= t:
                    start = r
                elif self.kind == "cosine_restarts":
                    end = r
                    break
            frac = (t - start) / (end - start)
            lr = self.eta_min + (self.lr - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * frac))
        if self.warmup and t < self.warmup:
            lr *= (t + 1e-8) / self.warmup  # never exactly 0 at t=0: an all-zero step is wasted
        return lr

    def state_dict(self) -> dict:
        return {"kind": self.kind, "restarts": list(self.restarts)}

    def load_state_dict(self, d: dict) -> None:
        self.kind, self.restarts = d["kind"], [float(r) for r in d["restarts"]]
