"""Method card: widen (Yuan, Savarese, Maire, "Accelerated Training via Incrementally Growing Neural Networks
using Variance Transfer and Learning Rate Adaptation", NeurIPS 2023).

What it does: trains the net at a fraction of its final widths and widens every layer step by step until it
reaches `--arch`, keeping the function at each growth. New channels come in cancelling pairs with random
weights, and the old weights that feed a BN are rescaled so that activations keep the variance of a net
built at the new width ("variance transfer"; `resgrow.grow.widen`, whose docstring says which factor applies
to which layer and why). Learning-rate adaptation: the elements of the net are grouped by the growth that
created them (group 0: the start), and group t trains at lr x ||W_t|| / ||W_0|| (Frobenius norms over the
group's conv and linear weights; the paper's rule), recomputed after every epoch. The scale multiplies the
gradient of the group's elements, so momentum carries it and weight decay stays at the run's rate (new units
are not decayed faster than old ones). Per element, not per tensor, because a growth adds rows and columns
inside existing tensors: each grouped tensor gets a mask of its elements' scales, applied in the backward of
the captured step and rewritten between steps when the scales change.

Schedule: every width of the net (the stages', the stem's, the blocks' inner convs') is its final width times
start x (1 / start)^(k / growths), rounded to even (pairs need an even number of new channels) and capped at the
final, for k = 0 .. growths; the last step is `--arch` itself. With the defaults the stages go 0.25, 0.30, 0.35,
0.42, 0.5, 0.59, 0.71, 0.84, 1.0 of their widths (the paper's +20% steps). A schedule that cannot be made (a
growth that widens nothing, an odd number of new channels for vt) is refused before any data is read. Stage
lengths grow by 20% from --t0 epochs (the paper's rule; T0 of a 160-epoch run, scaled to --epochs, each stage
at least one epoch, so any run of at least growths + 1 epochs holds them), or --widen-every N epochs; the final
widths keep the epochs after the last growth.

Batch adaptation (--batch-adapt, off by default): while the net is narrow it trains on --batch-size times the
largest power of two, at most 8, that keeps a step's FLOPs at most the final net's, with the lr multiplied by
the same factor (the linear scaling rule of Goyal et al. 2017), so a narrow net fills the GPU as the final
one does; the paper reports most of its wall-clock saving from this.

Defaults: start width 0.25, 8 growths, init vt, t0 8, lr adaptation on, batch adaptation off. The paper trains
ResNet-20 on CIFAR-10 with SGD lr 0.1, momentum 0.9, wd 5e-4, cosine. Comparison: --widen-init net2wider
--no-lr-adapt is Net2Net's widening.
When it helps: nets whose time follows their width (wide ResNets, or any net where the GPU is busy): the
narrow early stages cost a fraction of the full net's FLOPs. A small CIFAR net that leaves the GPU idle
gains little time, because a narrow step costs about what a wide one does; on a CPU too, a narrow net's step
is mostly its memory-bound layers (batch norm, activations, the optimizer), which shrink with the width far
less than its convolutions' FLOPs. `resgrow bench --widths` times the net at a narrower width on your device:
the growth can save no more than the narrow sizes' speed allows.
Measured speed and accuracy: BENCHMARKS.md, "Width growth".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import COSINES
from ..errors import ResgrowError
from ..events import GROW, event
from ..grow.vit import widen_vit
from ..grow.width import INITS, widen
from ..measure.flops import flops_per_image
from ..models.family import model_for, spec_from_dict
from ..models.spec import ArchSpec, dashed
from ..models.vit import ViTSpec
from .base import Change, GroupedLr, Method, MethodOptions, SliceGroups, option


def even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def width_schedule(final: tuple[int, ...], start: float, growths: int, padded: bool) -> list[tuple[int, ...]]:
    """The widths of every stage at the start and after each growth (the last: `final`). `padded` (zero-padding
    shortcuts): a stage grows at least as much as the one it extends, whose new channels it receives."""
    out = []
    for k in range(growths + 1):
        f = start * (1 / start) ** (k / growths)
        widths = list(final) if k == growths else [min(w, even(w * f)) for w in final]
        if out and padded:
            for s in range(1, len(widths)):
                widths[s] = max(widths[s], out[-1][s] + widths[s - 1] - out[-1][s - 1])
        out.append(tuple(widths))
    for a, b in zip(out, out[1:]):
        if a == b or any(x > y for x, y in zip(a, b)) or any(y > w for y, w in zip(b, final)):
            raise ResgrowError(f"widths {dashed(final)} are too narrow for {growths} growths from {start:g} of them "
                               f"({dashed(a)} -> {dashed(b)}): use fewer --growths or a larger --start-width")
    return out


def spec_schedule(final: ArchSpec, start: float, growths: int, init: str = "vt") -> list[ArchSpec]:
    """The net at the start and after each growth, every width aimed at the final net's: the stage widths by
    `width_schedule`; the inner widths and the stem's at the same fraction of their final widths, rounded to
    even and capped at the final; the stem tied to the first stage where the final net ties them (He et al.'s
    CIFAR nets). The last is `final` itself. Refused with one line where a growth could not be made."""
    stages = width_schedule(final.widths, start, growths, final.shortcut == "A")
    tied = final.stem_width == final.widths[0]
    specs = []
    for k, widths in enumerate(stages[:-1]):
        f = start * (1 / start) ** (k / growths)
        inner = tuple(min(i, even(i * f)) for i in final.inner_widths)
        stem = widths[0] if tied else min(final.stem_width, even(final.stem_width * f))
        specs.append(final.replace(widths=widths, inner_widths=inner, stem_width=stem))
    specs.append(final)
    for a, b in zip(specs, specs[1:]):
        _check_growth(a, b, final, init)
    return specs


def vit_schedule(final: ViTSpec, start: float, growths: int, init: str = "vt") -> list[ViTSpec]:
    """A ViT at the start and after each growth: its MLP width at the fraction of widen's rule, rounded to even and
    capped at the final; its heads at that fraction too, raised to the nearest count that reaches the final one by
    pairs (at least one head). The embedding width stays (`grow.vit`: LayerNorm forbids widening it exactly)."""
    if init != "vt":
        raise ResgrowError(f"a ViT widens by vt's cancelling pairs only, not --widen-init {init}")
    specs = []
    for k in range(growths + 1):
        f = start * (1 / start) ** (k / growths)
        heads = max(1, round(final.heads * f))
        heads = min(final.heads, heads + (final.heads - heads) % 2)
        specs.append(final.replace(heads=heads, mlp_dim=min(final.mlp_dim, even(final.mlp_dim * f))))
    specs[-1] = final
    for a, b in zip(specs, specs[1:]):
        if (a.heads, a.mlp_dim) == (b.heads, b.mlp_dim):
            raise ResgrowError(f"widths {a.widths_str()} -> {b.widths_str()} on the way to {final.widths_str()}: a "
                               "growth must widen something; use fewer --growths or a larger --start-width")
    return specs


def _sizes(spec: ArchSpec) -> dict[str, int]:
    return {"stem": spec.stem_width, **{f"stage {s + 1}": w for s, w in enumerate(spec.widths)},
            **{f"stage {s + 1}'s inner convs": w for s, w in enumerate(spec.inner_widths)}}


def _check_growth(a: ArchSpec, b: ArchSpec, final: ArchSpec, init: str) -> None:
    """What `grow.widen` needs of one growth, checked before any data is read."""
    old, new = _sizes(a), _sizes(b)
    where = f"{_shown(a)} -> {_shown(b)} on the way to {_shown(final)}"
    if any(new[k] < old[k] for k in old) or new == old:
        raise ResgrowError(f"widths {where}: every growth must widen something and narrow nothing; "
                           "use fewer --growths or a larger --start-width")
    odd = [k for k in old if (new[k] - old[k]) % 2]
    if init == "vt" and odd:
        raise ResgrowError(f"widths {where}: vt adds channels in cancelling pairs, and the {odd[0]} would grow by an "
                           f"odd number ({old[odd[0]]} -> {new[odd[0]]}): use a net of even widths or --widen-init "
                           "net2wider")
    if (a.stem_width == a.widths[0]) != (b.stem_width == b.widths[0]):
        raise ResgrowError(f"widths {where}: the stem and the first stage would start or stop sharing their "
                           "channels; use another --start-width")


def _shown(spec) -> str:
    if isinstance(spec, ViTSpec):
        return spec.widths_str()
    inner = "" if spec.inner_widths == spec.widths else f", inner {dashed(spec.inner_widths)}"
    return f"stem {spec.stem_width}, {dashed(spec.widths)}{inner}"


def growth_epochs(epochs: int, growths: int, t0: float, every: int | None) -> list[int]:
    """The epochs after which the net widens: stage lengths t0, 1.2 t0, 1.44 t0, ... (t0 of 160 epochs, scaled),
    each stage at least one epoch long and the final widths at least the last; or `every` epochs apart. The
    last stage, at the final widths, gets the rest."""
    if every:
        at = [every * (k + 1) for k in range(growths)]
        if at[-1] >= epochs:
            raise ResgrowError(f"{growths} growths {every} epochs apart need a run of at least {at[-1] + 1} epochs, "
                               f"not {epochs}: train longer, or use fewer --growths or a smaller --widen-every")
        return at
    if epochs < growths + 1:
        raise ResgrowError(f"{growths} growths need a run of at least {growths + 1} epochs (one per stage and one at "
                           f"the final widths), not {epochs}: train longer or use fewer --growths")
    at, total = [], 0.0
    for k in range(growths):
        total += t0 * epochs / 160 * 1.2 ** k
        lowest, highest = (at[-1] + 1 if at else 1), epochs - growths + k  # room for the stages still to come
        at.append(min(max(round(total), lowest), highest))
    return at


def adapted_batch(base_batch: int, final_flops: float, flops: float) -> int:
    """Batch adaptation: `base_batch` times the largest power of two, at most 8, that keeps a step's FLOPs (at
    `flops` per image) at most the final net's (at `final_flops`)."""
    return base_batch * min(8, 2 ** int(math.log2(max(final_flops / flops, 1.0))))


class GrowthGroups:
    """Learning-rate adaptation's bookkeeping: for every element of every parameter, the growth that created it
    (group 0: the start net), carried through each change's parameter map, and each group's lr scale
    ||W_t|| / ||W_0|| over conv and linear weights."""

    def __init__(self):
        self.ids: dict[str, torch.Tensor] = {}
        self.count = 1

    def start(self, model) -> None:
        self.ids = {n: torch.zeros(p.shape, dtype=torch.uint8) for n, p in model.named_parameters()}
        self.count = 1

    def follow(self, model, pmap: dict, new_group: bool) -> None:
        """After a change to `model`: carried elements keep their group, a copied tensor its source's groups; new
        elements join this change's group (`new_group`) or, for a change that opens none, the newest one."""
        self.count += bool(new_group)
        newest = self.count - 1
        ids = {}
        for name, p in model.named_parameters():
            src = pmap.get(name)
            if src is None:  # fresh in the new net
                ids[name] = torch.full(p.shape, newest, dtype=torch.uint8)
            elif isinstance(src, str):
                ids[name] = self.ids[src].clone()
            else:
                shifted = src[1].gather(self.ids[src[0]].double() + 1)  # new elements come out as 0
                ids[name] = torch.where(shifted > 0, shifted - 1, float(newest)).to(torch.uint8)
        self.ids = ids

    def names(self) -> list[str]:
        return [f"growth{t}" for t in range(self.count)]

    def slices(self, model) -> SliceGroups:
        return SliceGroups(self.names(), dict(self.ids), self.scales(model))

    @torch.no_grad()
    def scales(self, model) -> list[float]:
        """||W_t|| / ||W_0|| for every group, over conv and linear weights (one host sync)."""
        sq = torch.zeros(self.count, dtype=torch.float64, device=next(model.parameters()).device)
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                sq.index_add_(0, self.ids[name].to(sq.device).flatten().long(), p.detach().double().flatten() ** 2)
        norms = sq.sqrt().tolist()
        return [round(n / norms[0], 6) if norms[0] else 1.0 for n in norms]


@dataclass(frozen=True)
class WidenOptions(MethodOptions):
    start_width: float = option(0.25, "fraction of the final widths to start from")
    growths: int = option(8, "widenings from the start to the final widths")
    widen_init: str = option("vt", f"how new channels start: {' | '.join(INITS)}")
    t0: float = option(8.0, "epochs before the first growth, of a 160-epoch run scaled to --epochs; each later stage "
                            "is 1.2 times as long as the one before")
    widen_every: int | None = option(None, "epochs between growths instead of --t0's growing stages", int)
    lr_adapt: bool = option(True, "learning-rate adaptation per growth")
    batch_adapt: bool = option(False, "larger batches while the net is narrow: --batch-size times the largest power of "
                                      "two up to 8 that keeps a step's FLOPs at most the final net's, the lr scaled "
                                      "alike")

    def normalize(self):
        self.set("start_width", float(self.start_width))
        self.set("t0", float(self.t0))

    def check(self):
        if not 0 < self.start_width < 1 or self.growths < 1 or self.t0 <= 0 or (
                self.widen_every is not None and self.widen_every < 1):
            raise ResgrowError(f"widen needs 0 < --start-width < 1, --growths >= 1, --t0 > 0 and --widen-every >= 1 "
                               f"(got {self.start_width}, {self.growths}, {self.t0}, {self.widen_every})")
        if self.widen_init not in INITS:
            raise ResgrowError(f"unknown --widen-init {self.widen_init!r}; known: {', '.join(INITS)}")


class Widen(Method, GroupedLr):
    name = "widen"
    resizes = True
    Options = WidenOptions

    def __init__(self, options: WidenOptions | None = None, **given):
        super().__init__(options, **given)
        self.specs: list[ArchSpec] = []  # the net at the start and after each growth, known at run start
        self.at: list[int] = []
        self.done = 0  # growths so far
        self.groups = GrowthGroups()  # per parameter: the growth that created each element
        self.final_flops, self.base_batch = 0, 0  # batch adaptation's reference: the final net, --batch-size

    def plan(self, spec, epochs: int, schedule: str) -> tuple[list, list]:
        if schedule not in COSINES:
            raise ResgrowError("method widen trains with one cosine schedule over the run; use --schedule cosine")
        o = self.opts
        schedule_of = vit_schedule if isinstance(spec, ViTSpec) else spec_schedule
        specs = schedule_of(spec, o.start_width, o.growths, o.widen_init)
        return specs, growth_epochs(epochs, o.growths, o.t0, o.widen_every)

    def prepare(self, spec, epochs, schedule):
        self.plan(spec, epochs, schedule)

    def on_run_start(self, ctx):
        final = ctx.model.spec
        self.specs, self.at = self.plan(final, ctx.epochs, ctx.schedule.kind)
        start = model_for(self.specs[0]).to(next(ctx.model.parameters()).device)
        self.groups.start(start)
        text = (f"start {_shown(self.specs[0])} (final {_shown(final)}); widens after epochs "
                f"{', '.join(map(str, self.at))}")
        self.final_flops, self.base_batch = flops_per_image(final, ctx.image_size), ctx.batch_size
        return Change(start, {}, event("start", text, widths=self.specs[0].widths_str(), final=final.widths_str(),
                                       grow_at=list(self.at)), self.batch_for(start.spec, ctx.image_size))

    def on_epoch_end(self, ctx):
        if self.opts.lr_adapt:
            ctx.row["lr_scales"] = self.scales(ctx.model)
        if self.done < self.opts.growths and ctx.epoch == self.at[self.done]:
            return self.grow(ctx)
        if self.opts.lr_adapt:
            ctx.set_lr_scales(dict(zip(self.group_names(), ctx.row["lr_scales"])))
        return None

    def grow(self, ctx) -> Change:
        old = ctx.model.spec.widths_str()
        target = self.specs[self.done + 1]
        if isinstance(target, ViTSpec):
            wider, pmap = widen_vit(ctx.model, heads=target.heads, mlp_dim=target.mlp_dim)
        else:
            wider, pmap = widen(ctx.model, target.widths, init=self.opts.widen_init, stem_width=target.stem_width,
                                inner_widths=target.inner_widths)
        self.done += 1
        self.groups.follow(wider, pmap, new_group=True)
        if self.opts.lr_adapt:  # every older group's scale from the grown net too, not only the new group's
            ctx.set_lr_scales(dict(zip(self.group_names()[:-1], self.scales(wider)[:-1])))
        why = f"epoch {ctx.epoch}, growth {self.done} of {self.opts.growths}"
        return Change(wider, pmap, event(GROW, f"widened {old} -> {target.widths_str()} ({why})",
                                         **{"from": old, "to": target.widths_str(), "why": why}),
                      self.batch_for(wider.spec, ctx.image_size))

    def batch_for(self, spec, image_size) -> int | None:
        """Batch adaptation: the run's batch size times the largest power of two (at most 8) that keeps a step's
        FLOPs at most the final net's; None without it."""
        if not self.opts.batch_adapt:
            return None
        return adapted_batch(self.base_batch, self.final_flops, flops_per_image(spec, image_size))

    # ------------------------------------------------------------ learning-rate adaptation

    def group_names(self) -> list[str]:
        return self.groups.names()

    def slice_groups(self, model):
        if not self.opts.lr_adapt or not self.groups.ids:
            return None
        return self.groups.slices(model)

    def scales(self, model) -> list[float]:
        return self.groups.scales(model)

    def progress(self, row: dict) -> str:
        nxt = f"next growth after epoch {self.at[self.done]}" if self.done < self.opts.growths else "final widths"
        scales = f"; lr scales {', '.join(f'{s:.3g}' for s in row['lr_scales'])}" if row.get("lr_scales") else ""
        return nxt + scales

    def describe(self) -> str:
        o = self.opts
        how = f"every {o.widen_every} epochs" if o.widen_every else f"t0 {o.t0:g}"
        return (f"widen(start {o.start_width:g}, {o.growths} growths, {how}, init {o.widen_init}, lr adaptation "
                f"{'on' if o.lr_adapt else 'off'}{', batch adaptation' if o.batch_adapt else ''})")

    def state_dict(self) -> dict:
        return dict(super().state_dict(), specs=[sp.to_dict() for sp in self.specs], at=self.at, done=self.done,
                    ids=self.groups.ids, final_flops=self.final_flops, base_batch=self.base_batch)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.specs = [spec_from_dict(d) for d in state["specs"]]
        self.at, self.done = list(state["at"]), state["done"]
        self.groups.ids, self.groups.count = dict(state["ids"]), self.done + 1
        self.final_flops, self.base_batch = state["final_flops"], state["base_batch"]
