"""How a run trains (`TrainConfig`), declared once: each field's default, help and command-line flag live here,
and `resgrow train`'s training flags are generated from the fields. No torch here: `resgrow --help` stays fast."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from .errors import ResgrowError
from .options import floats

PRECISIONS = ("auto", "fp32", "bf16")
OPTIMIZERS = ("sgd", "adamw")
COSINES = ("cosine", "cosine_restarts", "cosine_reset")  # the schedules whose cycles a method may restart
SCHEDULES = ("constant", "step", *COSINES)


def setting(default: Any, help: str, flag: str | None = "", parse: Callable[[str], Any] | None = None,
            choices: tuple | None = None, default_text: str | None = None, aliases: tuple = ()):
    """A field of TrainConfig with its flag: `flag` "" is --name-with-dashes, "--no-x" turns a default-on switch
    off, None means no flag (set from Python only). `default_text` replaces the default in the help where the
    default is a rule."""
    return dataclasses.field(default=default, metadata=dict(help=help, flag=flag, parse=parse, choices=choices,
                                                            default_text=default_text, aliases=aliases))


@dataclass
class TrainConfig:
    epochs: int = setting(160, "epochs to train (growth epochs scale with it)")
    batch_size: int = setting(128, "images per training step")
    optimizer: str = setting("sgd", f"{' | '.join(OPTIMIZERS)} (AdamW: Loshchilov and Hutter 2019, weight decay "
                                    "decoupled from the gradient)")
    lr: float = setting(0.1, "peak learning rate")
    momentum: float = setting(0.9, "SGD momentum")
    nesterov: bool = setting(False, "Nesterov momentum")
    betas: tuple = setting((0.9, 0.999), "AdamW's betas, e.g. 0.9,0.999", parse=floats)
    weight_decay: float = setting(5e-4, "weight decay (SGD: L2 on every parameter; AdamW: decoupled)", flag="--wd",
                                  aliases=("--weight-decay",))
    schedule: str = setting("cosine", f"lr schedule: {' | '.join(SCHEDULES)}")
    eta_min: float = setting(0.0, "lowest lr of the cosine schedules")
    warmup: float = setting(0.0, "epochs of linear lr warm-up")
    milestones: tuple = setting((), "step schedule: epochs, e.g. 80,120", parse=floats, default_text="50%%, 75%% of "
                                "the run")
    gamma: float = setting(0.1, "step schedule: lr factor at each milestone")
    restarts: tuple = setting((), "cosine_restarts, cosine_reset: epochs, e.g. 60,110", parse=floats,
                              default_text="none")
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy")
    augment: bool = setting(True, "no random crop / flip", flag="--no-augment")
    eval_every: int = setting(1, "evaluate on the test split every N epochs (and after the last)")
    eval_batch_size: int = setting(1000, "images per evaluation batch (may be changed on --resume: it does not change "
                                         "training)")
    checkpoint_every: int = setting(1, "write a checkpoint every N epochs (and after the last)")
    device: str = setting("auto", "auto | cuda | cpu | cuda:N")
    amp: bool = setting(True, "fp32 instead of bf16 autocast (as --precision fp32)", flag="--no-amp")
    # auto: bf16 autocast where the device computes bf16 natively (a GPU of compute capability >= 8.0, a CPU with
    # AVX-512 BF16 or AMX), fp32 elsewhere; fp32 | bf16 force it (train/device.py)
    precision: str = setting("auto", "auto: bf16 autocast where the device computes bf16 natively (a GPU of compute "
                             "capability 8.0 on; a CPU with AVX-512 BF16 or AMX), fp32 elsewhere; fp32 or bf16 force "
                             "it (the first line says which)", choices=PRECISIONS)
    channels_last: bool = setting(True, "NCHW instead of the channels_last memory layout", flag="--no-channels-last")
    graphs: bool = setting(True, "run the step eagerly instead of as a CUDA graph (CUDA only)", flag="--no-graphs")
    # bf16 weight copies by one multi-tensor copy instead of per-layer autocast casts: bit-identical, fewer kernels
    # per step (BENCHMARKS.md). Only where bf16 autocast runs: without it there is nothing to replace.
    bf16_weights: bool = setting(True, "make the bf16 weights with one multi-tensor copy per step instead of "
                                 "autocast's per-layer casts (same numbers, fewer kernels per step; wherever bf16 "
                                 "autocast is)", flag="--bf16-weights")
    compile: str = setting("none", "none | blocks | model: torch.compile inside the captured step (experimental; "
                                   "blocks = each residual block, compiled once per distinct block shape)")
    compile_backend: str = setting("inductor", "torch.compile's backend", flag=None)
    deterministic: bool = setting(False, "deterministic GPU kernels: the same seed gives the same numbers on the same "
                                         "GPU and software (slower; not for timing)")
    tensorboard: bool = setting(False, "also log per-epoch scalars to OUT/tb (pip install 'resgrow[tensorboard]')")
    seed: int = setting(0, "seed of the model's initialisation, the data order and augmentation")
    quiet: bool = setting(False, "no progress output (CI)")
    workers: int | None = setting(None, "streamed data: host processes that read and augment images", parse=int,
                                  default_text="min(8, CPUs)")

    def validate(self) -> None:
        """One line for the first setting that cannot train (the CLI calls this before reading data)."""
        e = self.epochs
        problems = [
            (self.epochs >= 1 and self.lr > 0, f"need epochs >= 1 and lr > 0 (got epochs={e}, lr={self.lr})"),
            (self.batch_size >= 1, f"batch size must be >= 1, not {self.batch_size}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), not {self.momentum}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; use {', '.join(OPTIMIZERS)}"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
             f"betas must be two numbers in [0, 1), not {list(self.betas)}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, not {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), not {self.label_smoothing}"),
            (0 <= self.warmup < e, f"warm-up must be in [0, epochs={e}) epochs, not {self.warmup}"),
            (0 <= self.eta_min < self.lr, f"eta-min must be in [0, lr={self.lr}), not {self.eta_min}"),
            (self.gamma > 0, f"gamma must be > 0, not {self.gamma}"),
            (self.precision in PRECISIONS, f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}"),
            (self.amp or self.precision != "bf16", "bf16 (--precision bf16) and fp32 (--no-amp) both asked for"),
            (all(0 < m < e for m in self.milestones), f"milestones {list(self.milestones)} must be inside (0, {e})"),
            (not self.milestones or self.schedule == "step", "milestones apply to the step schedule, not "
             f"{self.schedule!r}"),
            (not self.restarts or self.schedule in COSINES,
             f"restarts apply to the cosine schedules, not {self.schedule!r}"),
            (min(self.eval_batch_size, self.eval_every, self.checkpoint_every) >= 1,
             f"eval batch size, eval-every and checkpoint-every must be >= 1 (got {self.eval_batch_size}, "
             f"{self.eval_every}, {self.checkpoint_every})"),
        ]
        for ok, message in problems:
            if not ok:
                raise ResgrowError(message)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"], d["restarts"], d["betas"] = list(self.milestones), list(self.restarts), list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})

    @classmethod
    def flag_of(cls, name: str, value=None) -> str:
        """The flag that sets field `name` (to `value`, for a switch)."""
        f = next(f for f in fields(cls) if f.name == name)
        flag = f.metadata["flag"]
        if flag == "":
            return "--" + name.replace("_", "-")
        if isinstance(f.default, bool) and flag == f"--{name.replace('_', '-')}" and value is False:
            return "--no-" + flag[2:]
        return flag


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Every TrainConfig field with a flag, onto `parser`. Each flag's value is None unless given (so a resume can
    tell what the command asked for); `config_from(given)` fills in the rest."""
    for f in fields(TrainConfig):
        m = f.metadata
        if m["flag"] is None:
            continue
        flag = m["flag"] or "--" + f.name.replace("_", "-")
        default = m["default_text"] or f.default
        text = f"{m['help']} (default {default})" if not isinstance(f.default, bool) else m["help"]
        if f.default is True and not flag.startswith("--no-"):
            text += " (default on)"
        if isinstance(f.default, bool) and flag.startswith("--no-"):
            kind = dict(action="store_const", const=False)
        elif isinstance(f.default, bool) and f.default:  # on by default: --name and --no-name
            kind = dict(action=argparse.BooleanOptionalAction)
        elif isinstance(f.default, bool):
            kind = dict(action="store_const", const=True)
        else:
            kind = dict(type=m["parse"] or type(f.default), choices=m["choices"])
        parser.add_argument(flag, *m["aliases"], dest=f.name, default=None, help=text, **kind)


def config_from(given: dict, base: TrainConfig | None = None) -> TrainConfig:
    """`base` (default: TrainConfig()) with the settings in `given` that are not None."""
    return dataclasses.replace(base or TrainConfig(), **{k: v for k, v in given.items()
                                                         if v is not None and k in TrainConfig.__dataclass_fields__})
