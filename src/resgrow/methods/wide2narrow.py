"""Method card: wide2narrow (Zhou, Ye, Chen, Meng, Tan, Song, Le, Liu, "Go wide, then narrow: efficient training
of deep thin networks", ICML 2020).

What it does: trains a wide net, then the thin net (`--arch`) taught by it, in four phases, each with its
own cosine cycle.
(1) The wide net: `--arch` with the inner 3x3 convs of every block --teacher-width K times wider (the
    paper's choice: block and stage outputs keep the thin net's channels), or every width K times wider
    (--teacher-widen all), trained on labels; or a finished resgrow run given as --teacher (weights only).
(2) Layerwise imitation, bottom to top: units are stages or blocks (--imitate-unit); unit i of the thin
    net takes the thin net's own output of unit i-1, and its output is matched by MSE to the wide net's
    output of unit i on the same images, for --imitate-epochs epochs per unit. The units below train at
    --lower-lr times the lr (0, the default: frozen, and no backward through them); the ones above wait.
(3) Logit distillation: KL between the softened outputs of both nets (--temperature), --distill-epochs.
(4) Labels, for the rest of the run.
The wide net is frozen and in eval mode from phase 2 on (its BN uses its running statistics: its features
are fixed targets, not moved by the thin net's batches) and leaves the checkpoints when phase 4 starts.

Where the outputs of a unit differ in channels (--teacher-widen all, or a --teacher of other widths), a 1x1
conv reads the thin unit's output in the wide net's channels for the MSE (Zhou et al.'s linear maps). The
maps are not on the thin net's path: between units a ResNet passes a ReLU and an identity (zero-padding)
shortcut, so a map on the path could not be folded exactly into the next conv. They are trained with their
unit and dropped when the imitation ends; the thin net keeps exactly the weights it had (the saved model is a
plain thin ResNet, `ArchSpec` equal to --arch's).

A ViT (`--arch vit...`): the wide net has --teacher-width times its MLP width (the embedding width kept),
and its units are its blocks, imitated one by one on their output tokens.

Cost: the wide net's training is part of the run's time and work; each step of phases 2 and 3 also counts
the wide net's forward pass (a third of its gradient). A --teacher run's own training time and accuracy are
read from its logs into this run's columns.
Defaults: K = 4 on the inner widths, stage units, the wide net for 40% of the run, imitation 10% of the run
split over the units (at least 1 epoch each), distillation 20% at temperature 4, labels for the rest.
When it helps: it does not save compute; it buys a better thin net than training it alone for the same
epochs. Zhou et al. report a ResNet-50 trained this way above a normally trained ResNet-101 on ImageNet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import COSINES
from ..errors import ResgrowError
from ..events import event
from ..measure.flops import flops_per_image
from ..models.family import model_for, spec_from_dict
from ..models.resnet import ResNet
from ..models.spec import ArchSpec
from ..models.vit import ViTSpec
from .base import (
    Change,
    Column,
    DataCheck,
    GroupedLr,
    Method,
    MethodOptions,
    OwnModules,
    OwnObjective,
    ParamGroup,
    option,
)

WIDENS = ("inner", "all")
UNITS = ("stage", "block")
SHARES = {"teacher": 0.4, "imitate": 0.1, "distill": 0.2}  # of the run's epochs, by default


def wide_spec(thin, k: float, widen: str = "inner"):
    """The wide net of `thin`: inner conv widths x k (a ViT's MLP), or every width (stem included) x k."""
    scale = lambda ws: tuple(max(1, round(w * k)) for w in ws)  # noqa: E731
    if isinstance(thin, ViTSpec):
        if widen != "inner":
            raise ResgrowError("a ViT's wide net widens its MLP (--teacher-widen inner): its blocks' outputs keep the "
                               "thin net's width, so the imitation needs no maps")
        return thin.replace(mlp_dim=max(1, round(thin.mlp_dim * k)))
    if widen == "inner":
        return thin.replace(inner_widths=scale(thin.inner_widths))
    return thin.replace(widths=scale(thin.widths), inner_widths=scale(thin.inner_widths),
                        stem_width=max(1, round(thin.stem_width * k)))


def unit_widths(spec, kind: str) -> list[int]:
    """The output channels of every unit."""
    if isinstance(spec, ViTSpec):  # one stage of blocks
        return [spec.dim] * (spec.depth if kind == "block" else 1)
    if kind == "stage":
        return list(spec.widths)
    return [w for n, w in zip(spec.blocks, spec.widths) for _ in range(n)]


@dataclass(frozen=True)
class WideToNarrowOptions(MethodOptions):
    teacher_width: float = option(4.0, "K: the wide net is K times wider")
    teacher_widen: str = option("inner", f"what K widens: {' | '.join(WIDENS)}; inner: the inner 3x3 convs")
    teacher: str | None = option(None, "a finished resgrow run to use as the wide net, its blocks per stage the thin "
                                 "net's", str, "the wide net is trained in this run")
    teacher_epochs: int | None = option(None, "epochs training the wide net", int, "0.4 of the run; none with "
                                        "--teacher")
    imitate_unit: str | None = option(None, f"the units imitated bottom to top: {' | '.join(UNITS)}", str,
                                      "stage; a ViT's: block")
    imitate_epochs: int | None = option(None, "epochs of imitation per unit", int,
                                        "0.1 of the run over the units, at least 1")
    lower_lr: float = option(0.0, "lr scale of the units below the one imitating; 0: frozen")
    distill_epochs: int | None = option(None, "epochs of logit distillation", int, "0.2 of the run")
    temperature: float = option(4.0, "of the logit distillation")

    def normalize(self):
        for name in ("teacher_width", "lower_lr", "temperature"):
            self.set(name, float(getattr(self, name)))
        if self.teacher is not None:
            self.set("teacher", str(Path(self.teacher).resolve()))

    def check(self):
        if self.teacher_width < 1:
            raise ResgrowError("--teacher-width must be >= 1 (the wide net is K times wider), not "
                               f"{self.teacher_width:g}")
        for value, known, flag in ((self.teacher_widen, WIDENS, "--teacher-widen"),
                                   (self.imitate_unit or "stage", UNITS, "--imitate-unit")):
            if value not in known:
                raise ResgrowError(f"unknown {flag} {value!r}; known: {', '.join(known)}")
        if self.lower_lr < 0 or self.temperature <= 0:
            raise ResgrowError(f"--lower-lr must be >= 0 and --temperature > 0 (got {self.lower_lr:g}, "
                               f"{self.temperature:g})")
        if self.teacher is not None and self.teacher_epochs:
            raise ResgrowError("--teacher gives a trained wide net: leave out --teacher-epochs")


class WideToNarrow(Method, GroupedLr, OwnObjective, OwnModules, DataCheck):
    name = "wide2narrow"
    resizes = True
    Options = WideToNarrowOptions
    log_columns = ("teacher_acc", "teacher_seconds")
    report_columns = (Column("teacher's final test acc", "teacher_acc", "last", ".2%"),
                      Column("teacher's training s", "teacher_seconds", "last", ".1f"))

    def __init__(self, options: WideToNarrowOptions | None = None, **given):
        super().__init__(options, **given)
        self.plan: list[tuple[str, int | None, int]] = []  # (phase, unit, epochs)
        self.phase = 0
        self.teacher_net: ResNet | None = None
        self.thin_net: ResNet | None = None  # the thin net waiting while the wide one trains
        self.maps: nn.ModuleList | None = None
        self.teacher_info: dict = {}  # a --teacher run's accuracy and training time, or this run's teacher's
        self.cost = 0.0  # the wide net's forward pass per image, in gradients of the thin net
        self._objective = None  # the loss of the phase: imitation, distillation, or None (labels)

    # ------------------------------------------------------------ the plan, checked before any data

    def phases(self, spec: ArchSpec, epochs: int) -> list[tuple[str, int | None, int]]:
        o = self.opts
        units = len(unit_widths(spec, self.unit_kind))
        teacher = 0 if o.teacher else o.teacher_epochs
        teacher = teacher if teacher is not None else round(SHARES["teacher"] * epochs)
        per_unit = o.imitate_epochs
        per_unit = per_unit if per_unit is not None else max(1, round(SHARES["imitate"] * epochs / units))
        distill = o.distill_epochs if o.distill_epochs is not None else round(SHARES["distill"] * epochs)
        if min(teacher, distill) < 0 or per_unit < 1:
            raise ResgrowError("--teacher-epochs and --distill-epochs must be >= 0, --imitate-epochs >= 1")
        used = teacher + units * per_unit + distill
        if used >= epochs:
            raise ResgrowError(f"the wide net ({teacher}), imitation ({units} {self.unit_kind}s x {per_unit}) and "
                               f"distillation ({distill}) take {used} epochs, leaving none of the {epochs} for labels: "
                               "train longer or give fewer --teacher-epochs/--imitate-epochs/--distill-epochs")
        plan = [("teacher", None, teacher)] if teacher else []
        plan += [("imitate", i, per_unit) for i in range(units)]
        plan += [("distill", None, distill)] if distill else []
        return plan + [("labels", None, epochs - used)]

    @property
    def teacher_run(self) -> str | None:
        return self.opts.teacher

    @property
    def unit_kind(self) -> str:
        return self.opts.imitate_unit or "stage"  # resolved by prepare(): a ViT's default is "block"

    def _teacher_spec(self, thin: ArchSpec) -> ArchSpec:
        if self.teacher_run is None:
            return wide_spec(thin, self.opts.teacher_width, self.opts.teacher_widen)
        if not (Path(self.teacher_run) / "run.json").is_file():
            raise ResgrowError(f"--teacher {self.teacher_run}: not a resgrow run directory (no run.json)")
        from ..train.checkpoint import load_run_checkpoint

        checkpoint, _ = load_run_checkpoint(Path(self.teacher_run))
        if checkpoint["spec"] is None:
            raise ResgrowError(f"--teacher {self.teacher_run} holds a model of its own, not a resgrow ResNet")
        spec = spec_from_dict(checkpoint["spec"])
        if spec.blocks != thin.blocks or spec.block != thin.block:
            raise ResgrowError(f"--teacher {self.teacher_run} is a {spec.block} net with blocks {spec.blocks_str()}; "
                               f"the thin net's are {thin.block}, {thin.blocks_str()}: imitation pairs them unit by "
                               "unit")
        return spec

    def prepare(self, spec, epochs, schedule):
        if schedule not in COSINES:
            raise ResgrowError("wide2narrow gives every phase its own cosine cycle; use --schedule cosine")
        self.fill(imitate_unit="block" if isinstance(spec, ViTSpec) else "stage")
        self.phases(spec, epochs)
        self._teacher_spec(spec)

    def check_data(self, source: str) -> None:
        """A --teacher must have been trained on this data (its run.json names it)."""
        if self.teacher_run is None:
            return
        info = json.loads((Path(self.teacher_run) / "run.json").read_text())
        if info.get("data") not in (None, source):
            raise ResgrowError(f"--teacher {self.teacher_run} was trained on {info['data']}, not on {source}")

    # ------------------------------------------------------------ phases

    @property
    def current(self) -> tuple[str, int | None, int]:
        return self.plan[self.phase]

    def on_run_start(self, ctx):
        thin = ctx.model
        self.prepare(thin.spec, ctx.epochs, ctx.schedule.kind)
        self.plan = self.phases(thin.spec, ctx.epochs)
        at = 0
        for _, _, n in self.plan[:-1]:
            at += n
            ctx.schedule.add_restart(at)
        device = next(thin.parameters()).device
        teacher_spec = self._teacher_spec(thin.spec)
        self.cost = flops_per_image(teacher_spec, 32) / flops_per_image(thin.spec, 32) / 3
        self.phase = 0
        if self.teacher_run is None:  # train the wide net first; the thin one waits, its init kept
            self.thin_net, wide = thin, model_for(teacher_spec).to(device)
            self._set_objective()
            return Change(wide, {}, event("start", f"wide net {teacher_spec.widths_str()} (inner "
                                          f"{'-'.join(map(str, teacher_spec.inner_widths))}) for {self.plan[0][2]} "
                                          f"epochs, then the thin net {thin.spec.widths_str()}",
                                          widths=teacher_spec.widths_str()))
        self.teacher_net = self._load_teacher(device)
        return self._to_thin(thin, f"wide net from {self.teacher_run}")

    def _load_teacher(self, device) -> ResNet:
        from ..report.metrics import MetricsLog
        from ..train.saved import load_model

        net = load_model(self.teacher_run, device=device)
        rows = MetricsLog(Path(self.teacher_run)).rows()
        if rows:
            last = rows[-1]
            self.teacher_info = {"teacher_acc": last.get("test_acc"), "teacher_seconds": last.get("train_seconds")}
        return self._freeze(net)

    @staticmethod
    def _freeze(net: ResNet) -> ResNet:
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def _to_thin(self, thin: ResNet, why: str) -> Change:
        """From the wide net (or a --teacher) to the thin net's imitation."""
        self.thin_net = None
        self._attach_maps(thin)
        self._set_objective()
        return Change(thin, {}, event("phase", f"{why}; imitation of {self._unit_name()}", phase="imitate"))

    def _unit_name(self) -> str:
        _, unit, _ = self.current
        return f"{self.unit_kind} {unit + 1} of {len(unit_widths(self.teacher_net.spec, self.unit_kind))}"

    def _attach_maps(self, thin: ResNet) -> None:
        """The 1x1 convs that read each thin unit in the wide net's channels, where they differ."""
        thin_w, wide_w = unit_widths(thin.spec, self.unit_kind), unit_widths(self.teacher_net.spec, self.unit_kind)
        if thin_w == wide_w:
            self.maps = None
            return
        ref = next(thin.parameters())
        self.maps = nn.ModuleList(nn.Conv2d(a, b, 1, bias=False) for a, b in zip(thin_w, wide_w)).to(ref.device)
        thin.aux["imitation_maps"] = self.maps  # trained with the thin net while it imitates

    def attach(self, model: nn.Module) -> nn.Module:
        """On resume: the modules this phase puts on the model (the maps), before its weights are loaded."""
        if self.plan and self.current[0] == "imitate" and self.teacher_net is not None:
            self._attach_maps(model)
        return model

    def on_epoch_end(self, ctx):
        phase, unit, n = self.current
        ctx.row["phase"] = phase if unit is None else f"{phase} {self.unit_kind} {unit + 1}"
        if phase in ("imitate", "distill"):  # each step also ran the wide net forward
            ctx.add_work(ctx.steps_per_epoch * self.cost)
        if phase == "teacher" and ctx.epoch == self._end():
            self.teacher_info = {"teacher_acc": ctx.row.get("test_acc"), "teacher_seconds": ctx.train_seconds}
        ctx.row.update(self.teacher_info)
        if ctx.epoch != self._end() or self.phase + 1 == len(self.plan):
            return None
        self.phase += 1
        nxt, unit, _ = self.current
        if phase == "teacher":
            self.teacher_net = self._freeze(ctx.model)
            return self._to_thin(self.thin_net, f"wide net trained ({ctx.row.get('test_acc', 0):.2%})")
        self._set_objective()
        if nxt == "imitate":
            ctx.reinstall(event("phase", f"imitation of {self._unit_name()}", phase=nxt))
            return None
        if phase == "imitate":  # the maps go: the thin net keeps its weights, a plain thin ResNet again
            ctx.model.aux.clear()
            self.maps = None
        if nxt == "labels":
            self.teacher_net = None
        text = {"distill": f"logit distillation at temperature {self.opts.temperature:g}",
                "labels": "training on labels"}[nxt]
        ctx.reinstall(event("phase", text, phase=nxt))
        return None

    def _end(self) -> int:
        """The epoch at which the current phase ends."""
        return sum(n for _, _, n in self.plan[: self.phase + 1])

    def _set_objective(self) -> None:
        phase = self.current[0] if self.plan else "teacher"
        self._objective = {"imitate": self._imitate, "distill": self._distill}.get(phase)

    def objective(self):
        return self._objective

    # ------------------------------------------------------------ objectives (inside the captured step)

    def _imitate(self, model: ResNet, x: torch.Tensor, y: torch.Tensor):
        i = self.current[1]
        units = model.units(self.unit_kind)
        frozen = self.opts.lower_lr == 0
        with torch.set_grad_enabled(not frozen or i == 0):
            h = model.stem(x)
            for unit in units[:i]:
                h = unit(h)
        h = units[i](h)
        with torch.no_grad():
            target = self.teacher_net.forward_features(x, self.unit_kind, upto=i)[-1]
        pred = h if self.maps is None else self.maps[i](h)
        loss = F.mse_loss(pred.float(), target.float())
        with torch.no_grad():  # the thin net's own logits, for the epoch's accuracy
            out = h
            for unit in units[i + 1:]:
                out = unit(out)
            logits = model.head(out)
        return loss, logits

    def _distill(self, model: ResNet, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        with torch.no_grad():
            target = self.teacher_net(x)
        t = self.opts.temperature
        loss = F.kl_div(F.log_softmax(logits.float() / t, 1), F.log_softmax(target.float() / t, 1), log_target=True,
                        reduction="batchmean") * t * t
        return loss, logits

    def param_groups(self, model):
        """While unit i imitates: it (with its map, and the stem for the first unit) at scale 1, the units below
        at --lower-lr, the rest at 0 (they get no gradient). Other phases: one group."""
        if not self.plan or self.current[0] != "imitate":
            return None
        i = self.current[1]
        units = model.units(self.unit_kind)
        stem = f"below{i}" if i else f"unit{i}"  # the stem belongs to the first unit
        owner = {id(p): stem for p in model.stem.parameters()}
        for j, unit in enumerate(units):
            for p in unit.parameters():
                owner[id(p)] = f"unit{i}" if j == i else (f"below{i}" if j < i else f"above{i}")
        if self.maps is not None:
            for j, m in enumerate(self.maps):
                for p in m.parameters():
                    owner[id(p)] = f"unit{i}" if j == i else f"above{i}"
        groups: dict[str, list[str]] = {f"unit{i}": [], f"below{i}": [], f"above{i}": []}
        for n, p in model.named_parameters():
            groups[owner.get(id(p), f"above{i}")].append(n)
        scales = {f"unit{i}": 1.0, f"below{i}": self.opts.lower_lr, f"above{i}": 0.0}
        return [ParamGroup(name, names, scales[name]) for name, names in groups.items() if names]

    def modules(self):
        if self.thin_net is not None:
            return {"thin": self.thin_net}
        return {"teacher": self.teacher_net} if self.teacher_net is not None else {}

    # ------------------------------------------------------------ reporting, state

    def progress(self, row: dict) -> str:
        phase = row.get("phase", "")
        return {"teacher": "wide net", "distill": "distilling"}.get(phase, phase.replace("imitate", "imitating"))

    def describe(self) -> str:
        o = self.opts
        teacher = f"teacher {o.teacher}" if o.teacher else f"teacher x{o.teacher_width:g} {o.teacher_widen} widths"
        return f"wide2narrow({teacher}, {self.unit_kind} units, lower lr {o.lower_lr:g}, T {o.temperature:g})"

    def state_dict(self) -> dict:
        return dict(super().state_dict(), plan=[list(p) for p in self.plan], phase=self.phase,
                    teacher_spec=self.teacher_net.spec.to_dict() if self.teacher_net is not None else None,
                    thin_spec=self.thin_net.spec.to_dict() if self.thin_net is not None else None,
                    teacher_info=self.teacher_info, cost=self.cost)

    def load_state_dict(self, state: dict) -> None:
        """The waiting thin net or the frozen wide one come back with their shapes; the trainer loads their
        weights and statistics (`modules`). The checkpoint holds the wide net's weights: a --teacher run moved
        away since is not needed any more."""
        super().load_state_dict(state)
        self.plan = [tuple(p) for p in state["plan"]]
        self.phase, self.teacher_info, self.cost = state["phase"], state["teacher_info"], state["cost"]
        self.thin_net = model_for(spec_from_dict(state["thin_spec"])) if state["thin_spec"] else None
        teacher = state["teacher_spec"]
        self.teacher_net = self._freeze(model_for(spec_from_dict(teacher))) if teacher else None
        self.maps = None
        self._set_objective()
