"""Method card: multilevel (Chang, Meng, Haber, Tung, Begert, "Multi-level residual networks from
dynamical systems view", ICLR 2018).

What it does: trains a shallow ResNet, and at fixed epochs interpolates it to twice the depth:
a copy of every block is inserted after it and h is halved (1 -> 0.5 -> 0.25), so the deeper net
starts as a finer discretisation of the same ODE. The learning rate is a cosine restarted at every
interpolation (one cycle per level); with --no-lr-restarts (ours) the run's schedule goes on through them.

Defaults: 3 cycles over 160 epochs, interpolations at epochs 60 and 110, scaled to --epochs
(first cycle 37.5% of the run, the rest split evenly); start blocks = final / 4 (3-3-3 for
resnet74; final / 2 where a stage's blocks do not divide by 4: resnet38's 6-6-6 starts at 3-3-3).
The paper uses lr 0.5 -> 0.001 at batch 100 (--lr 0.5 --eta-min 0.001).
Depths no doubling reaches (ResNet-50's 3-4-6-3) grow with --partial-growth (ours, not the paper's):
every stage doubles, capped at its final blocks, and only the blocks given a partner are split.
When it helps: long schedules where the shallow early cycles save time; Chang et al. report about
41% less time at equal accuracy on CIFAR-10/100 and STL-10. Under a CUDA graph a step's time is close
to linear in depth, so the growth epochs fix the time ratio: the share of epochs spent at each depth
times that depth's cost; growing later (--grow-at) saves more, at a risk to accuracy.
Measured speed and accuracy: BENCHMARKS.md, "Depth growth".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ResgrowError
from ..models.spec import dashed
from .base import floats, option
from .depth import (
    LR_RESTARTS,
    PARTIAL_GROWTH,
    DepthGrowth,
    DepthOptions,
    epochs_str,
    fixed_epochs,
    no_restarts_said,
    restarts_str,
)

DEEPEN_MODES = ("interpolate", "stack")


@dataclass(frozen=True)
class MultilevelOptions(DepthOptions):
    grow_at: tuple | None = option(None, "growth epochs, e.g. 60,110", floats, "60 and 110 of 160, scaled to --epochs")
    deepen_mode: str = option("interpolate", "how a growth deepens: interpolate (a copy after every block, h halved: "
                                             "the paper's) | stack (a ViT's whole stack repeated on top of itself, h "
                                             "kept: G_stack, Du et al. 2024)")
    lr_restarts: bool = LR_RESTARTS
    partial_growth: bool = PARTIAL_GROWTH

    def check(self):
        if self.deepen_mode not in DEEPEN_MODES:
            raise ResgrowError(f"unknown --deepen-mode {self.deepen_mode!r}; known: {', '.join(DEEPEN_MODES)}")
        if self.deepen_mode == "stack" and self.partial_growth:
            raise ResgrowError("--deepen-mode stack repeats the whole stack: it doubles, no partial growth")

    def normalize(self):
        super().normalize()
        if self.grow_at is not None:
            self.set("grow_at", tuple(sorted(int(round(e)) for e in self.grow_at)) or None)


class Multilevel(DepthGrowth):
    name = "multilevel"
    Options = MultilevelOptions

    @property
    def mode(self) -> str:
        return self.opts.deepen_mode

    def grow_epochs(self, epochs: int, k: int, start=(), final=()) -> list[int]:
        """The k growth epochs: --grow-at, or the paper's 60 and 110 of 160 scaled to `epochs`."""
        grow_at = self.opts.grow_at
        if grow_at is not None and len(grow_at) != k:
            n = len(grow_at)
            raise ResgrowError(f"--grow-at gives {n} epoch{'s' * (n != 1)} but {k} "
                               f"doubling{'s are' if k != 1 else ' is'} needed ({dashed(start)} -> {dashed(final)})")
        return fixed_epochs(epochs, k, grow_at)

    def prepare(self, spec, epochs, schedule):
        if self.opts.deepen_mode == "stack" and spec.block != "vit":
            raise ResgrowError("--deepen-mode stack repeats a ViT's stack of blocks; a ResNet's stages begin with a "
                               "block that changes the shape, which cannot be stacked")
        start, k = self.plan(spec.blocks, schedule)
        at = self.grow_epochs(epochs, k, start, spec.blocks)
        super().prepare(spec, epochs, schedule)
        self.fill(grow_at=tuple(at))

    def on_run_start(self, ctx):
        change = super().on_run_start(ctx)  # prepares: grow_at is resolved
        grow_at = self.opts.grow_at
        for e in grow_at if self.opts.lr_restarts else ():
            ctx.schedule.add_restart(e)
        change.event["text"] += f"; grows at {epochs_str(grow_at)}"
        change.event["grow_at"] = list(grow_at)
        no_restarts_said(change.event, self.opts.lr_restarts)
        return change

    def on_epoch_end(self, ctx):
        if self.grows_left and ctx.epoch in self.opts.grow_at:
            return self.grow(ctx, f"epoch {ctx.epoch}")
        return None

    def describe(self) -> str:
        at = self.opts.grow_at
        at = self.marked("grow_at", str(list(at))) if at else "default"
        how = (", stacking" if self.opts.deepen_mode == "stack" else "") + restarts_str(self.opts.lr_restarts)
        return f"multilevel(start {self.start_str()}, grow at {at}{how})"
