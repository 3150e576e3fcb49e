"""Method card: grow_once, a method of your own in one file: start at half the depth, double it once.

What it does: trains `--arch` at half its blocks per stage (every stage's blocks must be even), and after epoch
--grow-epoch inserts a copy of every block with h halved (`resgrow.grow.deepen`, which keeps the function), the
cosine schedule restarting there. Nothing of resgrow is edited to add it:

    PYTHONPATH=examples resgrow train --arch resnet20 --method grow_once:GrowOnce --grow-epoch 5 \\
        --data path/to/cifar10-jpeg.zip --epochs 20 --out runs/once

When it helps: an example of the method interface (options, a plan checked before the data is read, a hook that
returns a Change, state for checkpoints), not a method to measure.
"""

from __future__ import annotations

from dataclasses import dataclass

from resgrow.errors import ResgrowError
from resgrow.events import event
from resgrow.grow import deepen
from resgrow.methods import Change, Method, MethodOptions, option
from resgrow.models import ResNet


@dataclass(frozen=True)
class GrowOnceOptions(MethodOptions):
    grow_epoch: int = option(5, "the epoch after which the depth doubles")

    def check(self):
        if self.grow_epoch < 1:
            raise ResgrowError(f"--grow-epoch must be >= 1, not {self.grow_epoch}")


class GrowOnce(Method):
    name = "grow_once"
    Options = GrowOnceOptions
    resizes = True  # it hands the trainer new models: it needs a resgrow ResNet to start from

    def prepare(self, spec, epochs, schedule):
        if any(b % 2 for b in spec.blocks):
            raise ResgrowError(f"grow_once halves every stage's blocks: {spec.blocks_str()} has an odd stage")
        if self.opts.grow_epoch >= epochs:
            raise ResgrowError(f"--grow-epoch {self.opts.grow_epoch} leaves no epoch of the {epochs} for the grown net")

    def on_run_start(self, ctx):
        self.prepare(ctx.model.spec, ctx.epochs, ctx.schedule.kind)
        ctx.schedule.add_restart(self.opts.grow_epoch)
        half = ctx.model.spec.replace(blocks=tuple(b // 2 for b in ctx.model.spec.blocks))
        return Change(ResNet(half), {}, event("start", f"start {half.blocks_str()}"))

    def on_epoch_end(self, ctx):
        if ctx.epoch != self.opts.grow_epoch:
            return None
        deeper, param_map = deepen(ctx.model, "interpolate")
        return Change(deeper, param_map, event("grow", f"grew to {deeper.spec.blocks_str()} (epoch {ctx.epoch})"))

    def describe(self):
        return f"grow_once(after epoch {self.opts.grow_epoch})"
