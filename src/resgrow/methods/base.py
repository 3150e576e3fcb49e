"""The interface between a growth method and the trainer.

A method decides *when* and *how* the model changes. The core (`Method`): its options, `prepare` (the plan,
checked before any data is read), the hooks `on_run_start`, `on_epoch_end` and `on_step`, which may return a
`Change` (a new model plus a map from its parameters to the old ones), `describe`, `progress`, and its state for
checkpoints. The trainer then carries the optimizer state along the map, keeps the schedule position, lays the
model out for the device and captures a new CUDA graph. A method never touches the trainer's optimizer, graph or
loaders: what it may change goes through the `RunContext` of a hook.

What a method may do beyond the core is a capability it inherits, each a small class below: `GroupedLr`
(parameter groups with lr scales), `OwnObjective` (a loss of its own inside the step), `OwnModules` (modules
beside the model: a teacher, coarse levels), `OwnStep` (a step of its own, from sub-steps), `DataCheck` (refuse
data before it is read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Union

from ..options import Column, MethodOptions, Option, floats, option  # noqa: F401 - part of the method interface

if TYPE_CHECKING:
    from torch import nn

    from ..train.schedules import Schedule

# new parameter name -> old parameter name, or (old name, transform of the old state tensor)
ParamMap = dict[str, Union[str, "tuple[str, Callable[[Any], Any]]"]]


@dataclass
class Change:
    model: "nn.Module"
    param_map: ParamMap
    event: "dict | str"  # resgrow.events.event(...), or a line of text; goes into the log and the progress output
    # Train with this batch size from the next epoch on, the lr scaled in proportion to it (the linear scaling
    # rule of Goyal et al. 2017) against the run's --batch-size and --lr; None: keep the one in use.
    batch_size: int | None = None


@dataclass(kw_only=True)
class RunContext:
    """What a method sees at a hook. It may read anything, call `schedule.add_restart`, `set_lr_scales`,
    `add_work` and `reinstall`."""

    model: "nn.Module"
    epoch: int  # epochs completed
    epochs: int
    step: int  # global step count
    steps_per_epoch: int
    schedule: "Schedule"
    train_seconds: float
    image_size: tuple  # (H, W) of the training images: what the model sees
    row: dict = field(default_factory=dict)  # this epoch's metrics (on_epoch_end); a method may add fields
    history: list = field(default_factory=list)
    batch_size: int = 0  # the run's --batch-size (a Change may train with another)
    lr_scales: dict = field(default_factory=dict)  # {group name: lr scale} of the method's parameter groups
    set_lr_scales: Callable[[dict], None] = lambda scales: None  # change some: no new capture, from the next step
    # Several processes: rank 0's value of a number that decides a change (a score), on every rank
    shared_value: Callable[[float], float] = float
    device_lock: Any = None  # held around process-wide changes (cuDNN flags) where runs are trained together
    work: float = 0.0  # what add_work added: the trainer counts it into the epoch's grad_equivalents
    reinstalled: "dict | str | None" = None  # reinstall's event

    def add_work(self, gradients: float) -> None:
        """Work beyond the trainer's count, in gradients of the requested net (a teacher's forward passes). The
        trainer counts one gradient of the current net per step, except for a method with a step of its own
        (`OwnStep`), which adds all of its work here."""
        self.work += gradients

    def reinstall(self, event: "dict | str") -> None:
        """Install the current model again after this hook (when no Change is returned): the method's parameter
        groups, objective and modules are asked again, momentum kept, a new step captured; `event` is logged."""
        self.reinstalled = event


@dataclass
class SliceGroups:
    """Per-element groups inside tensors: `ids[name]` holds, for every element of that parameter, the index of
    its group in `names`; `scales` are the groups' initial lr scales. Parameters left out are at scale 1."""

    names: list[str]
    ids: dict[str, Any]  # parameter name -> integer tensor of the parameter's shape
    scales: list[float]


@dataclass
class ParamGroup:
    """Parameters that share a learning rate: the schedule's lr times `lr_scale` (timm's convention).
    Weight decay and momentum are the run's; the scale multiplies the lr alone."""

    name: str
    params: list[str]  # names of the model's parameters (model.named_parameters())
    lr_scale: float = 1.0


class Method:
    """Base class: every hook does nothing, so the model never changes (the fixed-size baseline).

    A method's options are one frozen dataclass, `Options` (a `MethodOptions` of `option(...)` fields): its
    constructor takes them (`Widen(Widen.Options(growths=4))`, or as keywords: `Widen(growths=4)`), and the
    command line's flags, the card's options and the resume check come from them. `self.opts` holds them."""

    name = "baseline"
    Options: type[MethodOptions] = MethodOptions  # none
    resizes = False  # True: hands the trainer new models, so it needs a resgrow ResNet to start from
    log_columns: tuple = ()  # per-epoch numbers the method adds to ctx.row that also go into metrics.csv / TensorBoard
    report_columns: tuple[Column, ...] = ()  # what `resgrow compare` shows of them (through run.json)
    step_interval = 0  # > 0: on_step is called every that many steps (costs a graph break when it returns a Change)
    opts: MethodOptions = MethodOptions()  # a method without options may skip Method.__init__
    filled: frozenset = frozenset()

    def __init__(self, options: MethodOptions | None = None, **given):
        if options is not None and given:
            raise TypeError(f"{type(self).__name__}: give its options as one {self.Options.__name__} or as keywords")
        self.opts = options if options is not None else self.Options(**given)
        self.filled: set[str] = set()  # options whose default the run resolved (`fill`): describe() marks them

    def fill(self, **values) -> None:
        """Options left at their default (None) resolved for the run (growth epochs scaled to its length), so that
        settings(), describe() and the checkpoint say what the run does."""
        unset = {k: v for k, v in values.items() if getattr(self.opts, k) is None}
        self.opts = self.opts.replace(**unset)
        self.filled = set(self.filled) | set(unset)

    def marked(self, name: str, text: str) -> str:
        """`text` (an option's value, for describe()), marked where the run resolved the option's default."""
        return f"{text} (default)" if name in self.filled else text

    @classmethod
    def options(cls) -> tuple[Option, ...]:
        """Its options as the command line sees them (flag, help with the default, parser)."""
        return cls.Options.declared()

    def prepare(self, spec, epochs: int, schedule: str) -> None:
        """Raise ResgrowError if the method cannot train the final architecture `spec` for `epochs` epochs with
        this schedule kind; else resolve (`fill`) the options whose defaults depend on them, so that describe(),
        settings() and run.json say what the run will do. Needs no data or model: the command line calls it before
        the data is read, the method again at the run's start (it must give the same result twice)."""

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return cls.Options.names()

    def on_run_start(self, ctx: "RunContext") -> Change | None:
        """Called once before the first epoch of a fresh run (not on resume). May set schedule restarts."""
        return None

    def on_epoch_end(self, ctx: "RunContext") -> Change | None:
        """Called after each epoch's training and evaluation. ctx.row holds that epoch's metrics; a
        method may add fields to it (they go into metrics.jsonl). Its time counts as training time."""
        return None

    def on_step(self, ctx: "RunContext") -> Change | None:
        """Called every `step_interval` steps (0: never). A Change here keeps the batch size."""
        return None

    def progress(self, row: dict) -> str:
        """A few words for the epoch's progress line, from the fields it added to `row` (e.g. how near
        its next growth is); "" for none."""
        return ""

    def state_dict(self) -> dict:
        """Everything it holds, for the checkpoint: its options and what it decided so far. A method that holds
        more extends this dict and `load_state_dict`."""
        return {"settings": self.settings(), "filled": sorted(self.filled)}

    def load_state_dict(self, state: dict) -> None:
        self.opts = self.Options.from_settings(state["settings"])
        self.filled = set(state["filled"])

    def settings(self) -> dict:
        """Its options as it trains with them; after `load_state_dict`, the values the run was started with.
        `resgrow train --resume` refuses an option that differs."""
        if not isinstance(self.opts, self.Options):
            raise TypeError(f"{type(self).__name__}.__init__ must call super().__init__(options, **given)")
        return self.opts.settings()

    def describe(self) -> str:
        return self.name

    @classmethod
    def card(cls) -> str:
        """The method card (paper, what it does, defaults, options, when it helps): the class's
        docstring if it is one, else its module's."""
        import inspect
        import sys

        card = next((doc for doc in (cls.__doc__, sys.modules[cls.__module__].__doc__)
                     if doc and doc.lstrip().startswith("Method card")), cls.__doc__ or f"{cls.name}: no method card")
        options = "".join(f"\n  {o.flag}: {o.help}" for o in cls.options())
        return inspect.cleandoc(card) + ("\n\nOptions:" + options if options else "")


class Baseline(Method):
    """Method card: the fixed-size reference. Trains `--arch` as given with the chosen schedule;
    every growth method's speed and accuracy are reported as ratios against it."""

    name = "baseline"


class GroupedLr:
    """Capability: parameters in groups with learning-rate scales of their own (timm's `lr_scale`)."""

    def param_groups(self, model: "nn.Module") -> list[ParamGroup] | None:
        """The model's parameters in groups, every parameter in one, each with its initial lr scale; None: one group
        at scale 1. Asked whenever the trainer installs a model (at the start, after a Change, on resume). A group
        keeps the scale it had when its name comes back; `ctx.set_lr_scales` changes scales between steps: the
        captured step reads them from the device, so nothing is captured again."""
        return None

    def slice_groups(self, model: "nn.Module") -> SliceGroups | None:
        """Groups of single elements inside the parameters (the units a growth added to a tensor), each with an lr
        scale; None: none. They scale the gradient of their elements (momentum follows; weight decay stays at the
        run's rate) and share `ctx.set_lr_scales` with `param_groups`."""
        return None


class OwnObjective:
    """Capability: a loss of its own, run inside the (captured) step under autocast."""

    def objective(self) -> "Callable[[nn.Module, Any, Any], tuple[Any, Any]] | None":
        """The loss of the steps from now on, as a function (model, x, y) -> (loss, logits); None: cross-entropy
        with the run's label smoothing. Asked whenever the trainer installs a model: a method with phases returns
        a Change or calls `ctx.reinstall` where its loss changes."""
        return None


class OwnModules:
    """Capability: modules of its own beside the model (a frozen teacher, coarse levels, a net waiting its turn)."""

    def modules(self) -> dict[str, "nn.Module"]:
        """The trainer puts them on the run's device and layout and keeps their state in checkpoints. After
        `load_state_dict` the method returns modules of the same shapes, into which the trainer loads their
        saved state. What it returns may change with the phase: a checkpoint holds the modules of its time."""
        return {}

    def attach(self, model: "nn.Module") -> "nn.Module":
        """On resume, the freshly built model before its weights are loaded: modules a phase trains with the model
        (`ResNet.aux`) are added here, so that the checkpoint's weights fit."""
        return model


class OwnStep:
    """Capability: a training step of its own, built from sub-steps (MG/OPT's V-cycle); it runs eagerly."""

    def train_step(self, step) -> None:
        """One step, given a `resgrow.train.step.MethodStep`: the model and its optimizer (lr set for this step),
        the next batch, autocast, an optimizer factory for modules of its own, and `record` for the epoch's
        metrics. Its work is its own to count (`ctx.add_work` at the epoch's end)."""
        raise NotImplementedError


class DataCheck:
    """Capability: data it cannot train on, refused before the data is read."""

    def check_data(self, source: str) -> None:
        """Raise ResgrowError if the method cannot train on the data at `source` (an absolute path, as run.json
        records it), e.g. a teacher trained on other data."""
