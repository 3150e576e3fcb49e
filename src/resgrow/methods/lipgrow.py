"""Method card: lipgrow (Dong, Liu, Li, Shang, "Towards Adaptive Residual Network Training:
A Neural-ODE Perspective", ICML 2020).

What it does: trains a shallow ResNet and doubles its depth (every block duplicated next to
itself, h halved exactly) when the net is ready. Ready means that the mean Lipschitz upper bound
of its residual blocks, smoothed over a window of epochs, has risen by a factor `threshold` over
its first smoothed value since the last (re)start, L0. Grows that have not triggered are forced
so that the final model still gets `reserve` epochs. At each grow the cosine learning rate
restarts at its peak and anneals over the remaining epochs.

Forcing rule (ours; the paper gives only the reserve): grow number g of G must happen by epoch
E - reserve - (G - g) * (window + 1), so that a forced grow still leaves a later one the window
it needs to trigger.

Defaults: threshold 1.4 (CIFAR; the paper uses 1.3 on Tiny-ImageNet), window 10 epochs, reserve
30 epochs of 164 scaled to --epochs, start blocks = final / 4 (3-3-3 -> 12-12-12 for resnet74).
The paper trains with lr 0.5 -> 0.001, batch 128, wd 1e-4 over 164 epochs.
Options: --start-blocks, --lip-threshold, --lip-window, --reserve.
Cost: the score is computed every epoch by warm-started power iterations (2 per conv); its time
is counted as training time and logged as `lip_seconds`.
When it helps: when it is unclear at which epochs to grow; Dong et al. report ResNet-74 on
CIFAR-10 at about half the time of the full-depth net, 0.3 points lower.
Measured here (BENCHMARKS.md, H100, resnet74, 40-epoch schedule with window 3, one seed):
0.59-0.61x the baseline's time, 0.6 points lower; the trigger fired on its own at epochs 11 and 30.
"""

from __future__ import annotations

import time

from ..measure.lipschitz import LipschitzMeter
from .depth import DepthGrowth


class LipGrow(DepthGrowth):
    name = "lipgrow"
    mode = "duplicate"
    options = ("start_blocks", "lip_threshold", "lip_window", "reserve")

    def __init__(self, start_blocks=None, lip_threshold: float = 1.4, lip_window: int = 10, reserve: int | None = None,
                 image_size: int = 32):
        super().__init__(start_blocks)
        self.threshold, self.window, self.reserve = float(lip_threshold), int(lip_window), reserve
        self.meter = LipschitzMeter(image_size)
        self.scores: list[float] = []  # since the last (re)start
        self.l0: float | None = None

    def on_run_start(self, ctx):
        change = super().on_run_start(ctx)
        if self.reserve is None:
            self.reserve = max(1, round(30 * ctx.epochs / 164))
        return change

    def deadline(self, epochs: int) -> int:
        """The epoch by which the next grow must happen."""
        g_left = self.grows_left
        return epochs - self.reserve - (g_left - 1) * (self.window + 1)

    def observe(self, score: float) -> float | None:
        """Record a score; return smoothed / L0 once both exist."""
        self.scores.append(score)
        if len(self.scores) < self.window:
            return None
        smoothed = sum(self.scores[-self.window:]) / self.window
        if self.l0 is None:
            self.l0 = smoothed
        return smoothed / self.l0

    def decide(self, epoch: int, epochs: int, score: float) -> tuple[bool, str, float | None]:
        """The trigger rule alone (no model): (grow?, why, ratio). Scripted tests drive this."""
        ratio = self.observe(score)
        if not self.grows_left:
            return False, "", ratio
        if ratio is not None and ratio > self.threshold:
            return True, f"smoothed Lipschitz ratio {ratio:.3f} > {self.threshold}", ratio
        if epoch >= self.deadline(epochs):
            return True, f"forced at epoch {epoch} to keep {self.reserve} reserve epochs", ratio
        return False, "", ratio

    def on_epoch_end(self, ctx):
        t0 = time.perf_counter()
        score = self.meter.score(ctx.model)  # every bound comes back as a float: the device work is done
        ctx.row["lip_seconds"] = round(time.perf_counter() - t0, 4)
        grow, why, ratio = self.decide(ctx.epoch, ctx.epochs, score)
        ctx.row["lip_score"], ctx.row["lip_ratio"] = score, ratio
        if not grow or ctx.epoch >= ctx.epochs:
            return None
        ctx.schedule.add_restart(ctx.epoch)
        return self.grow(ctx, why)

    def grow(self, ctx, why):
        self.scores, self.l0 = [], None  # the score's reference restarts with the new model
        return super().grow(ctx, why)

    def describe(self) -> str:
        return f"lipgrow(start {self.start_str()}, threshold {self.threshold}, window {self.window}, reserve {self.reserve or '30/164 of the run'})"

    def state_dict(self) -> dict:
        return dict(super().state_dict(), scores=list(self.scores), l0=self.l0, reserve=self.reserve,
                    vectors=self.meter.state_dict())

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scores, self.l0, self.reserve = list(state["scores"]), state["l0"], state["reserve"]
        self.meter.load_state_dict(state["vectors"])
