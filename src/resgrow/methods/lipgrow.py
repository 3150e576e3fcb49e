"""Method card: lipgrow (Dong, Liu, Li, Shang, "Towards Adaptive Residual Network Training:
A Neural-ODE Perspective", ICML 2020).

What it does: trains a shallow ResNet and doubles its depth (every block duplicated next to
itself, h halved exactly) when the net is ready. Ready means that the mean Lipschitz upper bound
of its residual blocks, smoothed over a window of epochs, has risen by a factor `threshold` over
its first smoothed value since the last (re)start, L0. Grows that have not triggered are forced
so that the final model still gets `reserve` epochs. At each grow the cosine learning rate
restarts at its peak and anneals over the remaining epochs (the run's schedule becomes
`cosine_reset`; `--schedule cosine_reset --restarts <its grow epochs>` gives a fixed-size net the
same learning rate: its restart baseline). With --no-lr-restarts (ours) the run's schedule goes on
through the grows.

Forcing rule (ours; the paper gives only the reserve): grow number g of G must happen by epoch
E - reserve - (G - g) * s with s = window + 1, so that a forced grow still leaves a later one the
window it needs to trigger. In a run too short for that (s > (E - reserve) // G, e.g. a quick
test), s = (E - reserve) // G: the forced grows split the epochs before the reserve evenly instead
of piling up at epoch 1, and the start event says that the window is too long to trigger.

Defaults: threshold 1.4 (CIFAR; the paper uses 1.3 on Tiny-ImageNet), window 10 epochs, reserve
30 epochs of 164 scaled to --epochs, start blocks = final / 4 (3-3-3 -> 12-12-12 for resnet74;
final / 2 where a stage's blocks do not divide by 4).
The paper trains with lr 0.5 -> 0.001, batch 128, wd 1e-4 over 164 epochs.
Depths no doubling reaches (ResNet-50's 3-4-6-3) grow with --partial-growth (ours, not the paper's):
every stage doubles, capped at its final blocks, and only the blocks given a partner are split.
Cost: the score is computed every epoch by warm-started power iterations (2 per conv), run as one
grouped convolution per conv shape, with one host sync; its time is counted as training time and
logged as `lip_seconds`.
Without the trainer: `LipGrowTrigger` is the rule alone (feed it a score per epoch), for a training
loop of your own together with `deepen` and `carry_state` (examples/own_loop.py).
When it helps: when it is unclear at which epochs to grow; Dong et al. report ResNet-74 on
CIFAR-10 at about half the time of the full-depth net, 0.3 points lower. The time saved follows the
epochs spent shallow, which the trigger decides: with a 10-epoch window it tends to grow early, so
expect less saving than multilevel's fixed schedule and a restart of the lr at each grow.
Measured speed and accuracy: BENCHMARKS.md, "Depth growth".
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import ResgrowError
from ..measure.lipschitz import LipschitzMeter
from .base import Column, option
from .depth import LR_RESTARTS, PARTIAL_GROWTH, DepthGrowth, DepthOptions, epochs_str, no_restarts_said, restarts_str


def check_options(threshold: float, window: int, reserve: int | None) -> None:
    # reserve >= 1: a grow forced at the last epoch would never train, and the run would end short of --arch
    if window < 1 or threshold <= 0 or (reserve is not None and reserve < 1):
        raise ResgrowError("LipGrow needs --lip-window >= 1, --lip-threshold > 0 and --reserve >= 1 (got "
                           f"window={window}, threshold={threshold}, reserve={reserve})")


def lipschitz_step(meter: LipschitzMeter, trigger: "LipGrowTrigger", ctx) -> tuple[bool, str]:
    """Score the model after this epoch and feed the trigger: (grow now?, why). Logs the score, the smoothed ratio
    and the meter's time (training time) into the epoch's row; several processes: rank 0's score decides."""
    t0 = time.perf_counter()
    meter.image_size = ctx.image_size  # a conv's operator norm depends on the feature-map size
    meter.lock = ctx.device_lock or meter.lock
    score = ctx.shared_value(meter.score(ctx.model))  # every bound comes back as a float: the device work is done
    ctx.row["lip_seconds"] = round(time.perf_counter() - t0, 4)
    grow, why, ratio = trigger.update(ctx.epoch, score)
    ctx.row["lip_score"], ctx.row["lip_ratio"] = score, ratio
    return grow, why


class LipGrowTrigger:
    """LipGrow's rule alone: given one model score per epoch, say when to grow. No model, no trainer,
    so it also serves a training loop of your own (README, "Your own training loop").

    `grows` doublings are to happen in a run of `epochs` epochs. `update(epoch, score)` after each
    epoch returns (grow?, why, smoothed / L0 or None); on a grow the window and L0 start again.
    """

    def __init__(self, grows: int, epochs: int, threshold: float = 1.4, window: int = 10, reserve: int | None = None):
        check_options(threshold, window, reserve)
        if reserve is None:
            reserve = max(1, round(30 * epochs / 164))
        if grows < 1 or grows > epochs - reserve:  # one grow per epoch at most, all before the reserve
            raise ResgrowError(f"LipGrow needs grows >= 1 and reserve < epochs, with an epoch for each grow before the "
                               f"reserve: at least grows + reserve epochs (got grows={grows}, reserve={reserve}, "
                               f"epochs={epochs})")
        self.grows_left, self.epochs, self.total = int(grows), int(epochs), int(grows)
        self.threshold, self.window, self.reserve = float(threshold), int(window), int(reserve)
        self.scores: list[float] = []  # since the last (re)start
        self.l0: float | None = None

    def spacing(self) -> int:
        """Epochs between forced grows: a window and one epoch to exceed it, or an even split of the
        epochs before the reserve where the run is too short for that (always >= 1, see __init__)."""
        return min(self.window + 1, (self.epochs - self.reserve) // self.total)

    def deadline(self, grows_left: int | None = None) -> int:
        """The epoch by which the next grow must happen (with `grows_left` grows still to do)."""
        left = self.grows_left if grows_left is None else grows_left
        return self.epochs - self.reserve - (left - 1) * self.spacing()

    def deadlines(self) -> list[int]:
        """The latest epoch of each grow still to do, in order (where forced grows would fall)."""
        return [self.deadline(left) for left in range(self.grows_left, 0, -1)]

    def _ratio(self, score: float) -> float | None:
        self.scores.append(float(score))
        if len(self.scores) < self.window:
            return None
        smoothed = sum(self.scores[-self.window:]) / self.window
        if self.l0 is None:
            self.l0 = smoothed
        return smoothed / self.l0

    def update(self, epoch: int, score: float) -> tuple[bool, str, float | None]:
        """Record the score of the model after `epoch` (1-based) epochs; (grow now?, why, ratio)."""
        ratio = self._ratio(score)
        if not self.grows_left:
            return False, "", ratio
        if ratio is not None and ratio > self.threshold:
            why = f"smoothed Lipschitz ratio {ratio:.3f} > {self.threshold}"
        elif epoch >= self.deadline():
            why = f"forced at epoch {epoch} to keep {self.reserve} reserve epoch{'s' * (self.reserve != 1)}"
        else:
            return False, "", ratio
        self.grows_left -= 1
        self.scores, self.l0 = [], None  # the score's reference restarts with the new model
        return True, why, ratio

    def state_dict(self) -> dict:
        return {"grows": self.total, "grows_left": self.grows_left, "epochs": self.epochs, "threshold": self.threshold,
                "window": self.window, "reserve": self.reserve, "scores": list(self.scores), "l0": self.l0}

    @classmethod
    def from_state_dict(cls, d: dict) -> "LipGrowTrigger":
        t = cls(d["grows"], d["epochs"], d["threshold"], d["window"], d["reserve"])
        t.grows_left, t.scores, t.l0 = d["grows_left"], [float(x) for x in d["scores"]], d["l0"]
        return t


@dataclass(frozen=True)
class LipGrowOptions(DepthOptions):
    lip_threshold: float = option(1.4, "grow when the smoothed score over its first value L0 exceeds this")
    lip_window: int = option(10, "smoothing window in epochs")
    reserve: int | None = option(None, "epochs the final model must get, at least 1", int, "30 of 164, scaled")
    lr_restarts: bool = LR_RESTARTS
    partial_growth: bool = PARTIAL_GROWTH

    def normalize(self):
        super().normalize()
        self.set("lip_threshold", float(self.lip_threshold))
        self.set("lip_window", int(self.lip_window))

    def check(self):
        check_options(self.lip_threshold, self.lip_window, self.reserve)


class LipGrow(DepthGrowth):
    name = "lipgrow"
    mode = "duplicate"
    Options = LipGrowOptions
    log_columns = ("lip_score", "lip_ratio", "lip_seconds")
    report_columns = (Column("Lipschitz s/epoch", "lip_seconds"),)

    def __init__(self, options: LipGrowOptions | None = None, **given):
        super().__init__(options, **given)
        self.meter = LipschitzMeter()  # its image size is the run's, set at every epoch end
        self.trigger: LipGrowTrigger | None = None  # made at run start, when the epochs and doublings are known

    def _trigger(self, k: int, epochs: int) -> LipGrowTrigger:
        o = self.opts
        return LipGrowTrigger(k, epochs, o.lip_threshold, o.lip_window, o.reserve)

    def prepare(self, spec, epochs, schedule):
        _, k = self.plan(spec.blocks, schedule)
        reserve = self._trigger(k, epochs).reserve
        super().prepare(spec, epochs, schedule)
        self.fill(reserve=reserve)

    def on_run_start(self, ctx):
        change = super().on_run_start(ctx)  # prepares: the reserve is resolved
        self.trigger = self._trigger(self.k, ctx.epochs)
        t = self.trigger
        change.event["text"] += (f"; grows when the smoothed ratio > {t.threshold}, at the latest after "
                                 f"{epochs_str(t.deadlines())}")
        change.event["deadlines"] = t.deadlines()
        if t.deadline() <= t.window:  # a ratio above 1 needs window + 1 scores
            change.event["text"] += (f" (too short for --lip-window {t.window}: a grow before epoch {t.window + 1} can "
                                     "only be forced)")
        no_restarts_said(change.event, self.opts.lr_restarts)
        return change

    def on_epoch_end(self, ctx):
        grow, why = lipschitz_step(self.meter, self.trigger, ctx)
        if not grow:  # reserve >= 1 puts every grow before the last epoch
            return None
        if self.opts.lr_restarts:  # anneal over the rest of the run: the next grow is unknown
            ctx.schedule.add_restart(ctx.epoch, reset=True)
        return self.grow(ctx, why)

    def progress(self, row: dict) -> str:
        if "lip_score" not in row:
            return ""
        r, t = row["lip_ratio"], self.trigger
        ratio = f"smoothed ratio {r:.3f}" if r is not None else f"no ratio before {t.window} scores"
        return f"Lipschitz {row['lip_score']:.4g}, {ratio}" + (f" (grows > {t.threshold})" if t.grows_left else "")

    def grow(self, ctx, why):
        change = super().grow(ctx, why)
        self.meter.follow(change.param_map)  # warm starts follow the copied weights, not the block positions
        return change

    def describe(self) -> str:
        o = self.opts
        reserve = self.marked("reserve", str(o.reserve)) if o.reserve is not None else "30/164 of the run"
        return (f"lipgrow(start {self.start_str()}, threshold {o.lip_threshold}, window {o.lip_window}, "
                f"reserve {reserve}{restarts_str(o.lr_restarts)})")

    def state_dict(self) -> dict:
        return dict(super().state_dict(), trigger=self.trigger.state_dict() if self.trigger else None,
                    vectors=self.meter.state_dict())

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.trigger = LipGrowTrigger.from_state_dict(state["trigger"]) if state["trigger"] else None
        self.meter.load_state_dict(state["vectors"])
