"""Method card: compound (depth and width grown together; ours, after CompoundGrow, Gu et al., "On the
Transformer Growth for Progressive BERT Training", NAACL 2021, which grows several dimensions of BERT at once).

What it does: trains a net shallower and narrower than `--arch` and grows both dimensions in a schedule of
stages, each a (blocks, widths) pair, the last `--arch` itself. Depth grows as multilevel's does (a copy of
every block inserted after it, h halved: `grow.deepen`'s "interpolate"), width as widen's (new channels in
cancelling pairs, variance transfer: `grow.widen`'s "vt"); a growth that changes both is one `grow.resize`,
deepening first, so that a copied block's new channels are drawn apart from its source's. Learning-rate
adaptation follows widen's rule (every width growth opens an lr group at ||W_t|| / ||W_0||; a copied block's
elements keep their source's groups), and the learning rate is a cosine restarted at every growth that deepens
(multilevel's cycles; a growth that only widens keeps the cycle, as widen keeps its one cosine); with
--no-lr-restarts the run's schedule goes on through every growth.

Stages: the depth path doubles every stage from --start-blocks (as multilevel; capped at the final blocks with
--partial-growth), the width path is widen's schedule from --start-width in --width-growths steps. With
--grow-order together, every growth takes a step of both (the path with fewer steps takes its steps at the
last growths); with alternate, growths deepen and widen by turns, deepening first (a deeper net costs twice, a
wider one about four times the FLOPs: the cheaper step first keeps the early stages cheap).
When: at fixed epochs (--trigger fixed, --grow-at; by default multilevel's rule: the first growth at 37.5% of
the run, the others evenly spaced after it), or when LipGrow's smoothed Lipschitz ratio says the net is ready
(--trigger lipschitz, with lipgrow's threshold, window and reserve; the lr then restarts at its peak at a
deepening growth and anneals to the end of the run, as lipgrow's does).

Defaults: half the final blocks per stage and half the final widths (about an eighth of the final net's FLOPs),
one growth of both together, at 37.5% of the run; init vt, lr adaptation on, batch adaptation off.
When it helps: where a step's time follows the net's FLOPs, the early stages cost a fraction of the final
net's. On a device where a narrow net is not much faster per image than a wide one (a small net on a big GPU,
or a CPU, `resgrow bench --widths`), width saves less than the FLOPs say and depth carries the saving.
By turns, a widening inside a cycle costs little, but one that comes last, late in a cycle, leaves the wider net
few epochs at a low lr: use alternate where the depth grows more often than the width (it then ends with a
deepening, which restarts the lr), and together where both grow once (the defaults).
Measured speed and accuracy: BENCHMARKS.md, "Compound growth".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ResgrowError
from ..events import GROW, event
from ..grow.resize import resize
from ..grow.width import INITS
from ..measure.flops import flops_per_image
from ..measure.lipschitz import LipschitzMeter
from ..models.resnet import ResNet
from ..models.spec import ArchSpec, dashed
from .base import Change, Column, GroupedLr, Method, MethodOptions, floats, option
from .depth import (
    LR_RESTARTS,
    PARTIAL_GROWTH,
    PARTIAL_HINT,
    epochs_str,
    fixed_epochs,
    growth_path,
    no_restarts_said,
    parse_blocks,
    restarts_checked,
    restarts_str,
)
from .lipgrow import LipGrowTrigger, check_options, lipschitz_step
from .widen import GrowthGroups, adapted_batch, spec_schedule

ORDERS = ("together", "alternate")
TRIGGERS = ("fixed", "lipschitz")
LIP_DEFAULTS = {"lip_threshold": 1.4, "lip_window": 10}  # lipgrow's


def half_blocks(final: tuple[int, ...], partial: bool) -> tuple[int, ...]:
    """The default start: half the final blocks of every stage (rounded up with partial growth)."""
    if all(f % 2 == 0 for f in final):
        return tuple(f // 2 for f in final)
    if partial:
        return tuple(-(-f // 2) for f in final)
    raise ResgrowError(f"final blocks {dashed(final)} cannot be halved in every stage; give --start-blocks, pick an "
                       f"arch with even blocks per stage, {PARTIAL_HINT}")


def interleave(depth_steps: int, width_steps: int, order: str) -> list[tuple[int, int]]:
    """(depth step, width step) at the start and after each growth, from (0, 0) to (depth_steps, width_steps)."""
    if order == "together":  # the shorter path takes its steps at the last growths: the net stays small longest
        n = max(depth_steps, width_steps)
        return [(max(0, i - n + depth_steps), max(0, i - n + width_steps)) for i in range(n + 1)]
    out, d, w = [(0, 0)], 0, 0
    while (d, w) != (depth_steps, width_steps):
        if d < depth_steps and (d <= w or w == width_steps):
            d += 1
        else:
            w += 1
        out.append((d, w))
    return out


def compound_plan(final: ArchSpec, start_blocks: tuple[int, ...], start_width: float, width_growths: int,
                  order: str, init: str = "vt", partial: bool = False) -> list[ArchSpec]:
    """The net at the start and after each growth (h at 1: a growth's own h comes from the net it grows); the last
    has `final`'s blocks and widths. Refused with one line where a step could not be made."""
    depths = [tuple(start_blocks), *growth_path(tuple(start_blocks), final.blocks, partial)]
    if len(depths) == 1:
        raise ResgrowError(f"start blocks equal the final blocks {dashed(final.blocks)}: nothing to deepen (method "
                           "widen grows the width alone)")
    widths = spec_schedule(final, start_width, width_growths, init)
    return [widths[w].replace(blocks=depths[d]) for d, w in interleave(len(depths) - 1, width_growths, order)]


def stage_str(spec: ArchSpec) -> str:
    return f"{spec.blocks_str()} at {spec.widths_str()}"


@dataclass(frozen=True)
class CompoundOptions(MethodOptions):
    start_blocks: tuple | None = option(None, "blocks per stage to start from, e.g. 4-4-4", str,
                                        "half the final blocks")
    start_width: float = option(0.5, "fraction of the final widths to start from")
    width_growths: int = option(1, "widenings from the start widths to the final ones (widen's schedule)")
    grow_order: str = option("together", f"{' | '.join(ORDERS)}: every growth deepens and widens, or growths deepen "
                                          "and widen by turns (deepening first)")
    trigger: str = option("fixed", f"when to grow: {' | '.join(TRIGGERS)} (at --grow-at, or when LipGrow's smoothed "
                                   "Lipschitz ratio exceeds --lip-threshold)")
    grow_at: tuple | None = option(None, "growth epochs with --trigger fixed, e.g. 8,14", floats,
                                   "the first at 37.5% of the run, the others evenly spaced after it")
    lip_threshold: float | None = option(None, "with --trigger lipschitz: grow when the smoothed score over its "
                                               "first value exceeds this", float, "1.4")
    lip_window: int | None = option(None, "with --trigger lipschitz: smoothing window in epochs", int, "10")
    reserve: int | None = option(None, "with --trigger lipschitz: epochs the final net must get, at least 1", int,
                                 "30 of 164, scaled")
    widen_init: str = option("vt", f"how new channels start: {' | '.join(INITS)}")
    lr_adapt: bool = option(True, "learning-rate adaptation per width growth")
    batch_adapt: bool = option(False, "larger batches while the net is small: --batch-size times the largest power of "
                                      "two up to 8 that keeps a step's FLOPs at most the final net's, the lr scaled "
                                      "alike")
    lr_restarts: bool = LR_RESTARTS
    partial_growth: bool = PARTIAL_GROWTH

    def normalize(self):
        if self.start_blocks is not None:
            self.set("start_blocks", parse_blocks(self.start_blocks))
        self.set("start_width", float(self.start_width))
        if self.grow_at is not None:
            self.set("grow_at", tuple(sorted(int(round(e)) for e in self.grow_at)) or None)

    def check(self):
        if not 0 < self.start_width < 1 or self.width_growths < 1:
            raise ResgrowError(f"compound needs 0 < --start-width < 1 and --width-growths >= 1 (got "
                               f"{self.start_width}, {self.width_growths})")
        for name, value, known in (("grow-order", self.grow_order, ORDERS), ("trigger", self.trigger, TRIGGERS),
                                   ("widen-init", self.widen_init, INITS)):
            if value not in known:
                raise ResgrowError(f"unknown --{name} {value!r}; known: {', '.join(known)}")
        lip = [f"--{n.replace('_', '-')}" for n in ("lip_threshold", "lip_window", "reserve") if getattr(self, n)
               is not None]
        if self.trigger == "fixed" and lip:
            raise ResgrowError(f"{', '.join(lip)} belong to --trigger lipschitz, not to growth at fixed epochs")
        if self.trigger == "lipschitz" and self.grow_at is not None:
            raise ResgrowError("--grow-at fixes the growth epochs; --trigger lipschitz decides them: give one")
        if self.trigger == "lipschitz":
            given = {k: LIP_DEFAULTS[k] if getattr(self, k) is None else getattr(self, k) for k in LIP_DEFAULTS}
            check_options(given["lip_threshold"], given["lip_window"], self.reserve)


class Compound(Method, GroupedLr):
    name = "compound"
    resizes = True
    Options = CompoundOptions

    def __init__(self, options: CompoundOptions | None = None, **given):
        super().__init__(options, **given)
        self.specs: list[ArchSpec] = []  # the net at the start and after each growth, known at run start
        self.at: list[int] = []  # fixed trigger: the growth epochs
        self.done = 0  # growths so far
        self.groups = GrowthGroups()
        self.trigger: LipGrowTrigger | None = None
        self.meter = LipschitzMeter()
        self.final_flops, self.base_batch = 0, 0

    @property
    def log_columns(self) -> tuple:
        return ("lip_score", "lip_ratio", "lip_seconds") if self.opts.trigger == "lipschitz" else ()

    @property
    def report_columns(self) -> tuple:
        return (Column("Lipschitz s/epoch", "lip_seconds"),) if self.opts.trigger == "lipschitz" else ()

    # ------------------------------------------------------------ the plan, before any data is read

    def plan(self, final: ArchSpec, schedule: str) -> list[ArchSpec]:
        if not isinstance(final, ArchSpec):
            raise ResgrowError(f"method compound grows a ResNet's stages and widths, not a {final.block} net's")
        restarts_checked(self.opts.lr_restarts, schedule, self.name)
        o = self.opts
        start = o.start_blocks or half_blocks(final.blocks, o.partial_growth)
        return compound_plan(final, start, o.start_width, o.width_growths, o.grow_order, o.widen_init,
                             o.partial_growth)

    def _trigger(self, growths: int, epochs: int) -> LipGrowTrigger:
        o = self.opts
        return LipGrowTrigger(growths, epochs, o.lip_threshold, o.lip_window, o.reserve)

    def prepare(self, spec, epochs, schedule):
        specs = self.plan(spec, schedule)
        k = len(specs) - 1
        self.fill(start_blocks=specs[0].blocks)
        if self.opts.trigger == "fixed":
            if self.opts.grow_at is not None and len(self.opts.grow_at) != k:
                raise ResgrowError(f"--grow-at gives {len(self.opts.grow_at)} epochs but the stages "
                                   f"{' -> '.join(map(stage_str, specs))} need {k}")
            self.fill(grow_at=tuple(fixed_epochs(epochs, k, self.opts.grow_at)))
        else:
            self.fill(**LIP_DEFAULTS)
            self.fill(reserve=self._trigger(k, epochs).reserve)

    # ------------------------------------------------------------ training

    def on_run_start(self, ctx):
        final = ctx.model.spec
        self.prepare(final, ctx.epochs, ctx.schedule.kind)
        self.specs = self.plan(final, ctx.schedule.kind)
        start = ResNet(self.specs[0]).to(next(ctx.model.parameters()).device)
        self.groups.start(start)
        self.final_flops, self.base_batch = flops_per_image(final, ctx.image_size), ctx.batch_size
        stages = " -> ".join(map(stage_str, self.specs))
        if self.opts.trigger == "fixed":
            self.at = list(self.opts.grow_at)
            for e, (a, b) in zip(self.at, zip(self.specs, self.specs[1:])):
                if a.blocks != b.blocks and self.opts.lr_restarts:
                    ctx.schedule.add_restart(e)
            when = f"grows at {epochs_str(self.at)}"
        else:
            self.trigger = self._trigger(len(self.specs) - 1, ctx.epochs)
            when = (f"grows when the smoothed Lipschitz ratio > {self.trigger.threshold}, at the latest after "
                    f"{epochs_str(self.trigger.deadlines())}")
        said = event("start", f"start {stage_str(self.specs[0])}; stages {stages}; {when}",
                     blocks=start.spec.blocks_str(), widths=start.spec.widths_str(),
                     stages=[stage_str(s) for s in self.specs], grow_at=list(self.at))
        no_restarts_said(said, self.opts.lr_restarts)
        return Change(start, {}, said, self.batch_for(start.spec, ctx.image_size))

    def on_epoch_end(self, ctx):
        if self.opts.lr_adapt:
            ctx.row["lr_scales"] = self.groups.scales(ctx.model)
        why = self.ready(ctx) if self.done < len(self.specs) - 1 else None
        if why:
            return self.grow(ctx, why)
        if self.opts.lr_adapt:
            ctx.set_lr_scales(dict(zip(self.groups.names(), ctx.row["lr_scales"])))
        return None

    def ready(self, ctx) -> str | None:
        """Why the net grows now, or None: the fixed epoch, or LipGrow's rule on this epoch's score."""
        if self.opts.trigger == "fixed":
            return f"epoch {ctx.epoch}" if ctx.epoch == self.at[self.done] else None
        grow, why = lipschitz_step(self.meter, self.trigger, ctx)
        return why if grow else None

    def grow(self, ctx, why: str) -> Change:
        now, target = ctx.model.spec, self.specs[self.done + 1]
        deepens = target.blocks != now.blocks
        widens = (target.widths, target.inner_widths, target.stem_width) != (now.widths, now.inner_widths,
                                                                              now.stem_width)
        new, pmap = resize(ctx.model, blocks=target.blocks if deepens else None,
                           widths=target.widths if widens else None, stem_width=target.stem_width,
                           inner_widths=target.inner_widths, init=self.opts.widen_init)
        self.done += 1
        self.groups.follow(new, pmap, new_group=widens)
        self.meter.follow(pmap)  # warm starts follow copied convs; a widened conv's starts cold
        if self.opts.lr_adapt and widens:  # every older group's scale from the grown net too
            ctx.set_lr_scales(dict(zip(self.groups.names()[:-1], self.groups.scales(new)[:-1])))
        if deepens and self.opts.trigger == "lipschitz" and self.opts.lr_restarts:
            ctx.schedule.add_restart(ctx.epoch, reset=True)  # anneal over the rest: the next growth is unknown
        why = f"{why}, growth {self.done} of {len(self.specs) - 1}"
        old = stage_str(now)
        return Change(new, pmap, event(GROW, f"grew {old} -> {stage_str(new.spec)} ({why})",
                                       **{"from": old, "to": stage_str(new.spec), "why": why}),
                      self.batch_for(new.spec, ctx.image_size))

    def batch_for(self, spec, image_size) -> int | None:
        if not self.opts.batch_adapt:
            return None
        return adapted_batch(self.base_batch, self.final_flops, flops_per_image(spec, image_size))

    # ------------------------------------------------------------ learning-rate adaptation

    def slice_groups(self, model):
        if not self.opts.lr_adapt or not self.groups.ids:
            return None
        return self.groups.slices(model)

    # ------------------------------------------------------------ reporting and checkpoints

    def progress(self, row: dict) -> str:
        parts = []
        if "lip_score" in row:
            r = row["lip_ratio"]
            parts.append(f"Lipschitz {row['lip_score']:.4g}, " +
                         (f"smoothed ratio {r:.3f}" if r is not None else "no ratio yet"))
        elif self.done < len(self.specs) - 1 and self.at:
            parts.append(f"next growth after epoch {self.at[self.done]}")
        if row.get("lr_scales"):
            parts.append(f"lr scales {', '.join(f'{s:.3g}' for s in row['lr_scales'])}")
        return "; ".join(parts)

    def describe(self) -> str:
        o = self.opts
        start = self.marked("start_blocks", dashed(o.start_blocks)) if o.start_blocks else "default"
        if o.trigger == "fixed":
            when = f"at {self.marked('grow_at', str(list(o.grow_at)))}" if o.grow_at else "at the default epochs"
        else:
            when = f"lipschitz (threshold {o.lip_threshold}, window {o.lip_window}, reserve {o.reserve})"
        return (f"compound(start {start} at {o.start_width:g} of the widths, {o.width_growths} width growth"
                f"{'s' * (o.width_growths != 1)}, {o.grow_order}, {when}, init {o.widen_init}, lr adaptation "
                f"{'on' if o.lr_adapt else 'off'}{', batch adaptation' if o.batch_adapt else ''}"
                f"{restarts_str(o.lr_restarts)}{', partial growth' if o.partial_growth else ''})")

    def state_dict(self) -> dict:
        return dict(super().state_dict(), specs=[s.to_dict() for s in self.specs], at=self.at, done=self.done,
                    ids=self.groups.ids, groups=self.groups.count, final_flops=self.final_flops,
                    base_batch=self.base_batch, trigger=self.trigger.state_dict() if self.trigger else None,
                    vectors=self.meter.state_dict())

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.specs = [ArchSpec.from_dict(d) for d in state["specs"]]
        self.at, self.done = list(state["at"]), state["done"]
        self.groups.ids, self.groups.count = dict(state["ids"]), state["groups"]
        self.final_flops, self.base_batch = state["final_flops"], state["base_batch"]
        self.trigger = LipGrowTrigger.from_state_dict(state["trigger"]) if state["trigger"] else None
        self.meter.load_state_dict(state["vectors"])
