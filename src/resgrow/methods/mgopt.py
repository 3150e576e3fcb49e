"""Method card: mgopt (Gaedke-Merzhäuser, Kopaničáková, Krause, "Multilevel minimization for deep residual
networks", 2020, arXiv 2004.06196).

What it does: trains the fine net (`--arch`) with V-cycles over coarser nets: the same net with half the
blocks and twice the step h, once per level below it (`resgrow.grow.levels`). On one mini-batch, a V-cycle
takes --nu-pre fine SGD steps, restricts the weights to the coarse level (injection or full weighting) and
gives the coarse objective a first-order (tau) correction, f~_H(x) = f_H(x) - <v, x> with
v = grad f_H(Pi x_h) - R grad f_h(x_h), so that its gradient at the restricted point is the restricted fine
gradient. It then takes --nu-c SGD steps on the coarsest level (or recurses through the levels between),
prolongs the coarse change e = P(x_H - Pi x_h) (constant or linear), and adds alpha e to the fine weights only
if e is a descent direction (<e, g> < 0): alpha by Armijo backtracking from --alpha (halving, at most 6
times), --alpha fixed, or the best of --alphas on the batch (`--line-search best`: every candidate is
evaluated and chosen on the device, with no host sync; the correction is taken only if the best candidate
lowers the objective). Then --nu-post fine steps. Every level keeps its own SGD momentum across cycles
(--reset-momentum: a fresh one every cycle) and its own BN statistics: gradients and line-search passes of a
level never move its statistics.

Nested iteration (--nested-epochs N, as Chang's multilevel starts): the coarsest level is trained alone first,
N epochs per coarse level, each prolonged (P on weights and statistics, fresh momentum) to the next finer
level, the schedule running on; the V-cycles start on the fine net. --mg-until F: V-cycles only in the first F
of the run, plain fine steps after.

Shared step (--shared-step, ours; with --nu-pre 0): the gradient a V-cycle computes at the fine weights for the
coarse objective's correction also takes the fine SGD step, after the restriction and before the correction,
so that one fine gradient buys both; the line search then starts from the stepped weights (one more forward
pass, none for --line-search fixed). Without it, the cheapest cycle computes that gradient for the correction
alone (BENCHMARKS.md, "Where an MG/OPT step's time goes"). With --line-search fixed the correction is added
unchecked on top of SGD's step, which at a large lr can throw the net off: check it (armijo or best).

Cost: every epoch logs its work in fine-gradient equivalents (`grad_equivalents`): a fine step or gradient
counts 1, a coarse one its FLOPs relative to the fine net, a forward pass alone a third of that.
Defaults: 2 levels, nu_pre = nu_post = 1, nu_c = 3, injection, constant prolongation, Armijo from alpha 1, a
V-cycle every step (--mg-every k: every k-th step, plain steps between) for the whole run, no nested
iteration, alphas 1, 0.5, 0.25, 0.125 for `best`. Runs eagerly: the V-cycle's
sub-steps are not captured as CUDA graphs yet, so on a GPU a step costs far more than the baseline's.
When it helps: the paper reports more than 3x less work to equal accuracy on small examples; a public port
lost accuracy after one MG/OPT epoch on CIFAR. resgrow measures it against single-level training on the
same work (BENCHMARKS.md, "MG/OPT").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ResgrowError
from ..events import GROW, event
from ..grow.levels import PROLONGATIONS, RESTRICTIONS, coarse_spec, corrected_loss, prolong, restrict, restrict_gradient
from ..measure.flops import flops_per_image
from ..models.custom import kept_buffers
from ..models.resnet import ResNet
from ..models.spec import ArchSpec
from ..options import Column
from ..train.optim import state_tensors
from .base import Change, Method, MethodOptions, OwnModules, OwnStep, option

LINE_SEARCHES = ("armijo", "fixed", "best")
ALPHAS = (1.0, 0.5, 0.25, 0.125)
ARMIJO_C, ARMIJO_HALVINGS = 1e-4, 6


@dataclass(frozen=True)
class MGOptOptions(MethodOptions):
    levels: int = option(2, "levels including the fine net; each coarser one halves the blocks")
    nu_pre: int = option(1, "fine SGD steps before the coarse correction")
    nu_post: int = option(1, "fine SGD steps after it")
    nu_c: int = option(3, "SGD steps on the coarsest level")
    restriction: str = option("injection", f"restriction of weights: {' | '.join(RESTRICTIONS)}")
    prolongation: str = option("constant", f"prolongation of the correction: {' | '.join(PROLONGATIONS)}")
    line_search: str = option("armijo", f"step length of the correction: {' | '.join(LINE_SEARCHES)}")
    alpha: float = option(1.0, "the correction's (first) step length")
    alphas: tuple = option(ALPHAS, "the candidates of --line-search best, e.g. 1,0.5,0.25")
    reset_momentum: bool = option(False, "a fresh momentum on the coarse levels at every V-cycle; off: kept")
    mg_every: int = option(1, "a V-cycle every k-th step, plain fine steps between")
    mg_until: float = option(1.0, "V-cycles in this first fraction of the run only, plain fine steps after")
    nested_epochs: int = option(0, "nested iteration: epochs on each coarse level, coarsest first, before the fine "
                                   "net; 0: none")
    shared_step: bool = option(False, "the V-cycle's fine gradient also takes a fine SGD step (in place of "
                                      "--nu-pre's, which must be 0), after the restriction and before the correction: "
                                      "one fine gradient buys the step and the coarse objective's correction")

    def normalize(self):
        self.set("alphas", tuple(float(a) for a in self.alphas))
        self.set("alpha", float(self.alpha))
        self.set("mg_until", float(self.mg_until))
        self.set("reset_momentum", bool(self.reset_momentum))

    def check(self):
        if (self.levels < 2 or min(self.nu_pre, self.nu_post) < 0 or self.nu_c < 1 or self.alpha <= 0
                or self.mg_every < 1):
            raise ResgrowError(f"mgopt needs --levels >= 2, --nu-pre/--nu-post >= 0, --nu-c >= 1, --alpha > 0 and "
                               f"--mg-every >= 1 (got {self.levels}, {self.nu_pre}/{self.nu_post}, {self.nu_c}, "
                               f"{self.alpha}, {self.mg_every})")
        if not self.alphas or min(self.alphas) <= 0 or not 0 < self.mg_until <= 1 or self.nested_epochs < 0:
            raise ResgrowError(f"mgopt needs positive --alphas, --mg-until in (0, 1] and --nested-epochs >= 0 (got "
                               f"{','.join(map(str, self.alphas)) or 'none'}, {self.mg_until}, {self.nested_epochs})")
        if self.shared_step and self.nu_pre:
            raise ResgrowError(f"--shared-step takes the place of the fine steps before the correction: give --nu-pre "
                               f"0, not {self.nu_pre}")
        for value, known, flag in ((self.restriction, RESTRICTIONS, "--restriction"),
                                   (self.prolongation, PROLONGATIONS, "--prolongation"),
                                   (self.line_search, LINE_SEARCHES, "--line-search")):
            if value not in known:
                raise ResgrowError(f"unknown {flag} {value!r}; known: {', '.join(known)}")


class MGOpt(Method, OwnStep, OwnModules):
    name = "mgopt"
    resizes = True  # trains the given size, but the levels are built from a resgrow ResNet's spec
    Options = MGOptOptions
    log_columns = ("grad_equivalents", "accepted")
    report_columns = (Column("fine-gradient equivalents", "grad_equivalents", "sum", ".0f"),
                      Column("corrections accepted", "accepted", "mean", ".2f"))

    def __init__(self, options: MGOptOptions | None = None, **given):
        super().__init__(options, **given)
        self.level = 0  # the level the trainer's model is at: > 0 during nested iteration
        self.coarse: list[ResNet] = []  # levels 1 .. levels-1
        self.specs: list[ArchSpec] = []  # every level's, the fine net first
        self.optimizers: list[torch.optim.Optimizer] = []
        self._saved: list = []  # the coarse levels' optimizer state from a checkpoint, until their optimizers are made
        self.steps, self.work, self.cycles, self.accepted = 0, 0.0, 0, 0
        self.cost: list[float] = []  # per level, a gradient's FLOPs relative to the fine net's
        self.last: dict = {}  # the last correction: what the tests and the log look at

    def prepare(self, spec, epochs, schedule):
        if not isinstance(spec, ArchSpec):
            raise ResgrowError(f"method mgopt restricts a ResNet's stages to coarser levels, not a {spec.block} net's")
        levels, nested = self.opts.levels, self.opts.nested_epochs
        for _ in range(levels - 1):
            spec = coarse_spec(spec)
        if nested * (levels - 1) >= epochs:
            raise ResgrowError(f"--nested-epochs {nested} on {levels - 1} coarse level(s) leaves no epoch of the "
                               f"{epochs} for the fine net")

    def on_run_start(self, ctx):
        self.prepare(ctx.model.spec, ctx.epochs, "cosine")
        self._build(ctx.model)
        if not self.opts.nested_epochs:
            return None
        coarsest, self.level = self.coarse[-1], self.opts.levels - 1
        self.coarse = []  # the V-cycles' levels are built again from the fine net once it is reached
        return Change(coarsest, {}, event("start", f"start {coarsest.spec.blocks_str()} (nested iteration; fine "
                                                   f"{ctx.model.spec.blocks_str()})", blocks=coarsest.spec.blocks_str(),
                                          final=ctx.model.spec.blocks_str()))

    def _finer(self, model: ResNet) -> ResNet:
        """The next finer level of `model`, its weights and statistics prolonged."""
        spec = self.specs[self.level - 1]
        ref = next(model.parameters())
        finer = ResNet(spec).to(ref.device, ref.dtype)
        with torch.no_grad():
            for values, own in ((dict(model.named_parameters()), dict(finer.named_parameters())),
                                (dict(model.named_buffers()), dict(finer.named_buffers()))):
                for name, value in prolong({n: t.detach() for n, t in values.items()}, spec, list(own),
                                           self.opts.prolongation).items():
                    own[name].copy_(value)
        return finer

    def _build(self, fine: ResNet) -> None:
        self.coarse = []
        level = fine
        for _ in range(self.opts.levels - 1):
            level = restrict(level, self.opts.restriction)
            self.coarse.append(level)
        self.specs = [m.spec for m in [fine, *self.coarse]]
        flops = [flops_per_image(s, 32) for s in self.specs]  # ratios: the image size cancels
        self.cost = [f / flops[0] for f in flops]
        self.optimizers, self._saved = [], []  # made, with the fine optimizer's settings, at the next step

    def modules(self):
        return {f"level{i + 1}": m for i, m in enumerate(self.coarse)}

    # ------------------------------------------------------------ one training step

    def train_step(self, step):
        if not self.optimizers:  # the coarse levels' own optimizers, with the run's settings
            self.optimizers = [step.new_optimizer(m.parameters()) for m in self.coarse]
            self._restore_state()
        x, y = step.next_batch()
        self.steps += 1
        levels = [step.model, *self.coarse]
        opts = [step.optimizer, *self.optimizers]
        for o in self.optimizers:
            step.set_lr(o)
            if self.opts.reset_momentum:
                o.state.clear()
        if self.level or self.steps % self.opts.mg_every or step.epoch >= self.opts.mg_until * step.epochs:
            loss, out = self._sgd(levels, opts, 0, x, y, None, step)
            step.record(loss, out, y)
            return
        loss = out = None
        for _ in range(self.opts.nu_pre):
            loss, out = self._sgd(levels, opts, 0, x, y, None, step)
        shared = self._cycle(levels, opts, 0, x, y, None, step)
        if shared is not None:  # the cycle's own fine step: its loss and forward pass are the step's
            loss, out = shared
        for _ in range(self.opts.nu_post):
            loss, out = self._sgd(levels, opts, 0, x, y, None, step)
        if loss is None:  # no fine step: the epoch's loss is the fine objective after the cycle, and this pass
            # gathers the fine net's BN statistics, which no fine step does (evaluation would use stale ones)
            with torch.no_grad(), step.autocast():
                out = step.model(x)
                loss = F.cross_entropy(out, y)
            self.work += self.cost[0] / 3
        step.record(loss, out, y)

    def _objective(self, model, x, y, v, step):
        with step.autocast():
            out = model(x)
            loss = F.cross_entropy(out, y)
        return (loss if v is None else corrected_loss(loss.float(), model, v)), out

    def _sgd(self, levels, opts, level, x, y, v, step):
        loss, out = self._backward(levels[level], opts[level], level, x, y, v, step)
        opts[level].step()
        return loss, out

    def _backward(self, model, optimizer, level, x, y, v, step):
        """An SGD step's forward and backward on `model` (statistics gathered, gradients in .grad, averaged over the
        ranks so that every rank takes the same step); the optimizer's step is the caller's."""
        optimizer.zero_grad(set_to_none=True)
        loss, out = self._objective(model, x, y, v, step)
        loss.backward()
        step.ranks.mean_grads(model.parameters())
        self.work += self.cost[self.level + level]
        return loss.detach(), out.detach()

    def _gradient(self, model, level, x, y, v, step) -> tuple[dict, torch.Tensor]:
        """The level's objective and its gradient at the current weights; statistics and .grad left alone."""
        params = [p for _, p in model.named_parameters()]
        with kept_buffers(model):
            loss, _ = self._objective(model, x, y, v, step)
            grads = [g.detach() for g in torch.autograd.grad(loss, params)]
        loss = loss.detach().clone()
        step.ranks.mean_([*grads, loss])  # the whole global batch's gradient and objective, on every rank
        self.work += self.cost[self.level + level]
        return {n: g for (n, _), g in zip(model.named_parameters(), grads)}, loss

    @torch.no_grad()
    def _value(self, model, level, x, y, v, step) -> torch.Tensor:
        with kept_buffers(model):
            loss, _ = self._objective(model, x, y, v, step)
        self.work += self.cost[self.level + level] / 3
        loss = loss.detach().clone()
        step.ranks.mean_([loss])  # a line search decides alike on every rank
        return loss

    def _cycle(self, levels, opts, level, x, y, v, step):
        """One V-cycle from `level` (its objective corrected by `v`) down to the coarsest and back. Returns the
        (loss, logits) of the fine step it took with its own gradient (--shared-step), else None."""
        fine, coarse = levels[level], levels[level + 1]
        shared, taken = self.opts.shared_step and level == 0, None
        if shared:
            g, f0, taken = self._shared_gradient(fine, opts[0], x, y, step)
        else:
            g, f0 = self._gradient(fine, level, x, y, v, step)
        restrict(fine, self.opts.restriction, into=coarse)
        if shared:  # the restriction and the correction's objective are at x; the fine step moves it to x - lr g
            opts[0].step()
            if self.opts.line_search != "fixed":  # the line search compares with the objective where the net is now
                f0 = self._value(fine, level, x, y, v, step)
        start = {n: p.detach().clone() for n, p in coarse.named_parameters()}
        g_coarse, _ = self._gradient(coarse, level + 1, x, y, None, step)
        names = list(start)
        rg = restrict_gradient(g, fine.spec, names, self.opts.prolongation)
        v_coarse = {n: g_coarse[n] - rg[n] for n in names}
        if level + 1 == len(levels) - 1:
            for _ in range(self.opts.nu_c):
                self._sgd(levels, opts, level + 1, x, y, v_coarse, step)
        else:
            for _ in range(self.opts.nu_pre):
                self._sgd(levels, opts, level + 1, x, y, v_coarse, step)
            self._cycle(levels, opts, level + 1, x, y, v_coarse, step)
            for _ in range(self.opts.nu_post):
                self._sgd(levels, opts, level + 1, x, y, v_coarse, step)
        delta = {n: p.detach() - start[n] for n, p in coarse.named_parameters()}
        e = prolong(delta, fine.spec, [n for n, _ in fine.named_parameters()], self.opts.prolongation)
        slope = sum((g[n] * e[n]).sum() for n in e)
        if level == 0:
            self.cycles += 1
        if self.opts.line_search == "best":
            self._take_best(fine, level, x, y, v, step, e, f0, slope)
            return taken
        self.last = {"slope": float(slope), "f0": float(f0), "accepted": False}
        if not self.last["slope"] < 0:  # not a descent direction: the fine weights stay
            return taken
        alpha = self._step_length(fine, level, x, y, v, step, e, self.last["f0"], self.last["slope"])
        if alpha is None:
            return taken
        with torch.no_grad():
            for n, p in fine.named_parameters():
                p.add_(e[n], alpha=alpha)
        self.last.update(accepted=True, alpha=alpha)
        if level == 0:
            self.accepted += 1
        return taken

    def _shared_gradient(self, model, optimizer, x, y, step) -> tuple[dict, torch.Tensor, tuple]:
        """A fine SGD step's forward and backward, its gradient kept for the cycle; the optimizer steps after the
        restriction. Returns (gradient, objective over the ranks, (loss, logits) for the epoch's record)."""
        loss, out = self._backward(model, optimizer, 0, x, y, None, step)
        f0 = loss.clone()
        step.ranks.mean_([f0])
        return {n: p.grad.detach().clone() for n, p in model.named_parameters()}, f0, (loss, out)

    @torch.no_grad()
    def _trial(self, model, level, x, y, v, step, e, alpha: float) -> torch.Tensor:
        """The objective at x + alpha e, with the weights put back exactly (x + a e - a e is not x in floats)."""
        params = dict(model.named_parameters())
        start = {n: p.clone() for n, p in params.items()}
        for n, p in params.items():
            p.add_(e[n], alpha=alpha)
        value = self._value(model, level, x, y, v, step)
        for n, p in params.items():
            p.copy_(start[n])
        return value

    @torch.no_grad()
    def _step_length(self, model, level, x, y, v, step, e, f0: float, slope: float) -> float | None:
        """Armijo backtracking (f(x + a e) <= f(x) + c a <g, e>, halving a), or the fixed alpha."""
        if self.opts.line_search == "fixed":
            return self.opts.alpha
        alpha = self.opts.alpha
        for _ in range(ARMIJO_HALVINGS + 1):
            value = float(self._trial(model, level, x, y, v, step, e, alpha))
            if value <= f0 + ARMIJO_C * alpha * slope:
                self.last["f_new"] = value
                return alpha
            alpha /= 2
        return None

    @torch.no_grad()
    def _take_best(self, model, level, x, y, v, step, e, f0: torch.Tensor, slope: torch.Tensor) -> None:
        """x += a e for the candidate a with the lowest objective on the batch, if it is below f(x) and e descends;
        else x stays (a = 0). Chosen on the device: no host sync, so a captured step can hold it."""
        values = torch.stack([self._trial(model, level, x, y, v, step, e, a).float() for a in self.opts.alphas])
        best = values.argmin()
        ok = (values[best] < f0.float()) & (slope < 0)
        alpha = torch.where(ok, torch.tensor(self.opts.alphas, device=values.device)[best], 0.0)
        for n, p in model.named_parameters():
            p.add_(e[n] * alpha.to(p.dtype))
        self.last = {"slope": slope, "f0": f0, "f_new": values[best], "alpha": alpha, "accepted": ok, "values": values}
        if level == 0:
            self.accepted = self.accepted + ok.int()

    # ------------------------------------------------------------ epochs, state

    def on_epoch_end(self, ctx):
        ctx.add_work(self.work)  # every sub-step's: the trainer counts none for a step of the method's own
        ctx.row["accepted"] = round(float(self.accepted) / self.cycles, 4) if self.cycles else None
        self.work, self.cycles, self.accepted = 0.0, 0, 0
        if self.level and ctx.epoch == self.opts.nested_epochs * (self.opts.levels - self.level):
            return self._prolong_up(ctx.model, ctx.epoch)
        return None

    def _prolong_up(self, model: ResNet, epoch: int) -> Change:
        """Nested iteration: the next finer level, prolonged; on reaching the fine net, its V-cycle levels."""
        finer = self._finer(model)
        self.level -= 1
        if self.level == 0:
            self._build(finer)
        old, new = model.spec.blocks_str(), finer.spec.blocks_str()
        return Change(finer, {}, event(GROW, f"grew {old} -> {new} (nested iteration, epoch {epoch})",
                                       **{"from": old, "to": new, "why": f"nested iteration, epoch {epoch}"}))

    def progress(self, row: dict) -> str:
        acc = f", {row['accepted']:.0%} of corrections accepted" if row.get("accepted") is not None else ""
        return f"{row.get('grad_equivalents', 0):.0f} fine-gradient equivalents{acc}"

    def describe(self) -> str:
        o = self.opts
        ls = {"armijo": f"Armijo from alpha {o.alpha:g}", "fixed": f"alpha {o.alpha:g}",
              "best": f"best of alphas {','.join(f'{a:g}' for a in o.alphas)}"}[o.line_search]
        extra = "".join([", momentum reset" * o.reset_momentum, f", until {o.mg_until:g} of the run" * (o.mg_until < 1),
                         f", nested {o.nested_epochs} epochs a level" * bool(o.nested_epochs),
                         ", shared fine step" * o.shared_step])
        return (f"mgopt({o.levels} levels, nu {o.nu_pre}/{o.nu_c}/{o.nu_post}, {o.restriction}, {o.prolongation}, "
                f"{ls}, every {o.mg_every} step{'s' * (o.mg_every > 1)}{extra})")

    def state_dict(self) -> dict:
        coarse_state = ([state_tensors(o, m) for o, m in zip(self.optimizers, self.coarse)] if self.optimizers
                        else self._saved)  # not stepped since a resume: the state it came back with
        return {**super().state_dict(), "steps": self.steps, "work": self.work, "cycles": self.cycles,
                "accepted": float(self.accepted), "specs": [m.spec.to_dict() for m in self.coarse], "cost": self.cost,
                "coarse_state": coarse_state, "level": self.level,
                "level_specs": [sp.to_dict() for sp in self.specs]}

    def load_state_dict(self, state: dict) -> None:
        """The coarse nets come back with their shapes (the trainer loads their weights and statistics), their
        optimizers' state (SGD's momentum, AdamW's moments and counts) when the first step makes their optimizers."""
        super().load_state_dict(state)
        self.optimizers = []
        self.steps, self.work = state["steps"], state["work"]
        self.cycles, self.accepted = state["cycles"], state["accepted"]
        self.coarse = [ResNet(ArchSpec.from_dict(d)) for d in state["specs"]]
        self.cost, self.level = list(state["cost"]), state["level"]
        self.specs = [ArchSpec.from_dict(d) for d in state["level_specs"]]
        if "coarse_state" in state:
            self._saved = state["coarse_state"]
        else:  # a checkpoint from before AdamW: SGD's momentum alone, None where a parameter had none
            self._saved = [[{} if b is None else {"momentum_buffer": b} for b in bufs] for bufs in state["momentum"]]

    def _restore_state(self) -> None:
        for o, m, saved in zip(self.optimizers, self.coarse, self._saved):
            for p, st in zip(m.parameters(), saved, strict=True):
                # a count (AdamW's step) stays on the host, where torch's optimizers keep it unless capturable
                o.state[p].update({k: v.to(p.device).clone() if v.dim() else v.clone() for k, v in st.items()})
        self._saved = []
