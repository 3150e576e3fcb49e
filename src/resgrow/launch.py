"""What `resgrow train` does before the first epoch, for the command line and Python alike: a `RunRequest` (the
net, the data, the run directory, the method, the settings given) checked before any data is read, then the data,
the model and the `Trainer`.

    from resgrow.launch import RunRequest, prepare_run
    trainer = prepare_run(RunRequest(out="runs/ml", arch="resnet74", data="cifar10", method="multilevel",
                                     settings={"epochs": 40}))
    trainer.fit()

Every problem a user can fix is one `ResgrowError` line, raised before the data is read where it can be. A resume
takes what the request leaves out from the run, and refuses a training setting or method option that differs
from the run's (`resgrow.resume`).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .config import TrainConfig, config_from
from .errors import ResgrowError
from .resume import FREE, differences, refuse, shown


@dataclass
class RunRequest:
    """One `resgrow train`. Every field left at None is the run's on resume, else the default."""

    out: str | os.PathLike
    arch: str | None = None  # registry name or package.module:function
    data: str | None = None  # cifar10 | cifar100 | cifar10-sample | an ImageFolder directory or zip
    method: str | None = None  # default: baseline
    method_options: dict = field(default_factory=dict)  # option name -> value (None: not given)
    settings: dict = field(default_factory=dict)  # TrainConfig field -> value (None: not given)
    val_size: int | None = None
    image_size: int | None = None
    recipe: str | None = None  # imagenet: torchvision's reference recipe for what the request leaves out
    stream: bool = False
    stream_augment: str | None = None  # imagenet (default) | crop
    decode: str | None = None  # auto (default) | host | device
    data_dir: str = "data"
    cache_dir: str | None = None
    resume: bool = False
    stop_after: int | None = None
    command: list = field(default_factory=list)  # the command line, for run.json

    def given(self) -> dict:
        """The training settings the request names (not None)."""
        return {k: v for k, v in self.settings.items() if v is not None}


# torchvision's classification reference for ResNets: SGD lr 0.1 at global batch 256 (8 GPUs x 32), momentum 0.9,
# wd 1e-4, 90 epochs, lr x0.1 every 30; random-resized 224 px crops + flip, resize 256 + centre crop for evaluation.
IMAGENET_SETTINGS = {"epochs": 90, "weight_decay": 1e-4, "schedule": "step", "gamma": 0.1}
IMAGENET_BATCH, IMAGENET_LR = 256, 0.1


# A ViT on CIFAR-size images (DeiT's recipe, Touvron et al. 2021, at CIFAR's scale): AdamW at lr 1e-3 for batch
# 128, wd 0.05 (decoupled), label smoothing 0.1, a linear warm-up over the first 5% of the epochs, then cosine to 0.
# Augmentation: the in-memory pad-4 random crop and flip; the heavier augmentations a long ViT run needs
# (RandAugment, mixup, CutMix) slow a short run's learning, which is what the CPU tables train.
VIT_SETTINGS = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "label_smoothing": 0.1, "schedule": "cosine"}
VIT_WARMUP = 0.05


def apply_recipe(req: RunRequest) -> None:
    """--recipe imagenet | vit: the recipe's values for every setting the request does not give."""
    s = req.settings
    if req.recipe == "vit":
        for key, value in VIT_SETTINGS.items():
            if s.get(key) is None:
                s[key] = value
        if s.get("warmup") is None:
            s["warmup"] = VIT_WARMUP * (s.get("epochs") or TrainConfig.epochs)
        return
    for key, value in IMAGENET_SETTINGS.items():
        if s.get(key) is None:
            s[key] = value
    req.image_size = 224 if req.image_size is None else req.image_size
    req.stream = True
    req.stream_augment = req.stream_augment or "imagenet"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if s.get("batch_size") is None:
        s["batch_size"] = max(1, IMAGENET_BATCH // world)
    if s.get("lr") is None:  # the linear scaling rule for another global batch
        s["lr"] = IMAGENET_LR * s["batch_size"] * world / IMAGENET_BATCH
    if s.get("milestones") is None:
        s["milestones"] = (round(s["epochs"] / 3), round(2 * s["epochs"] / 3))


def take_run_settings(req: RunRequest, stored: dict, source: str) -> None:
    """A resume: what the request leaves out comes from the run; a training setting that differs from the run's
    is refused, since the stored one would silently win."""
    from .data.sources import check_recorded_data

    info, cfg = stored.get("run_info", {}), stored["config"]
    for key in ("arch", "data"):
        if getattr(req, key) is None:
            if not info.get(key):
                raise ResgrowError(f"{source} does not name its --{key}: give it")
            setattr(req, key, info[key])
            if key == "data":
                check_recorded_data(req.data, source)
    name = stored["method"]["ref"]  # a method of your own: its package.module:Class
    if req.method not in (None, name):
        raise ResgrowError(f"{source} was trained with method {name!r}, not {req.method!r}")
    req.method = name
    run = dict(cfg, val_size=info.get("val_size", 0), image_size=info.get("image_size"))
    given = dict(req.given(), val_size=req.val_size, image_size=req.image_size)
    refuse(differences(given, run), source, _said)


def _said(key: str, given, had) -> str:
    """A differing training setting as the command line names it (a switch: that the run lacked it)."""
    flag = TrainConfig.flag_of(key, given) if key in TrainConfig.__dataclass_fields__ else "--" + key.replace("_", "-")
    if isinstance(given, bool):
        return f"{flag} (the run was started without it)"
    return f"{flag} {shown(given)} (the run's: {shown(had)})"


def check_method_settings(req: RunRequest, method, stored: dict, source: str) -> None:
    """Method options given with a resume must be the run's; the method then holds the run's values (so its
    progress line shows them; the trainer reloads its whole state later)."""
    named = {k for k, v in req.method_options.items() if v is not None}
    given = {k: v for k, v in method.settings().items() if k in named}  # as the method parsed them
    method.load_state_dict(stored["method"]["state"])
    refuse(differences(given, method.settings()), source,
           lambda k, v, had: f"--{k.replace('_', '-')} {shown(v)} (the run's: {shown(had)})")


def _prepare_own_model(arch: str, method, epochs: int, schedule: str) -> None:
    """A growth method on a model of your own is checked on a build on the meta device (no memory, no data), so a
    wrong --start-blocks fails before the data is decoded; a factory that cannot build there is checked on the
    real model, after the data is read."""
    import torch

    from .models.custom import build_custom
    from .train.trainer import arch_of, check_resizable

    if not method.resizes:
        return
    try:
        with torch.device("meta"):
            model = build_custom(arch, 10)
    except Exception:  # noqa: BLE001 - checked again, with its own error, once the data is known
        return
    check_resizable(method, model)
    method.prepare(arch_of(model), epochs, schedule)


def _resumed_config(req: RunRequest, stored: dict) -> TrainConfig:
    """The run's config, with where and how visibly it goes on as given: the device and quiet (else their
    defaults), the eval batch size and workers (else the run's)."""
    given = req.given()
    free = {"device": given.get("device", TrainConfig.device), "quiet": given.get("quiet", False)}
    free.update({k: given[k] for k in FREE - free.keys() if k in given})
    return config_from(free, TrainConfig.from_dict(stored["config"]))


def _prepare_method(req: RunRequest, method, cfg: TrainConfig) -> None:
    """The method's plan for the net and the run (a fresh run), and its data check, before any data is read."""
    from .data.sources import data_source
    from .methods.base import DataCheck
    from .models.custom import is_custom, model_factory
    from .models.registry import spec_for

    if is_custom(req.arch):
        model_factory(req.arch)  # importable, before any data is read
        if not req.resume:
            _prepare_own_model(req.arch, method, cfg.epochs, cfg.schedule)
    elif not req.resume:
        method.prepare(spec_for(req.arch), cfg.epochs, cfg.schedule)
    else:
        spec_for(req.arch)
    if not req.resume and isinstance(method, DataCheck):
        method.check_data(data_source(req.data))


def _checked(req: RunRequest):
    """Every check that needs no data: the run directory, the resume's settings, the method and its plan, the
    training settings. Returns (method, the checkpoint of a resume or None, the TrainConfig)."""
    from .methods import build_method
    from .train.checkpoint import load_run_checkpoint
    from .train.compile import check_compile
    from .train.run_dir import check_run_dir
    from .train.schedules import check_schedule

    stored = source = None
    if req.recipe and not req.resume:
        apply_recipe(req)
    if req.resume:  # the run's own settings first: the request may leave them out
        check_run_dir(Path(req.out), True)
        stored, path = load_run_checkpoint(req.out)  # refuses a corrupt or tampered file up front
        source = f"checkpoint {path}"
        take_run_settings(req, stored, source)
        cfg = _resumed_config(req, stored)
    elif req.arch is None or req.data is None:
        raise ResgrowError("the following arguments are required: " + ", ".join(
            f"--{k}" for k in ("arch", "data") if getattr(req, k) is None) + " (only --resume may leave them out)")
    else:
        cfg = config_from(req.settings)
    method = build_method(req.method or "baseline", **req.method_options)
    if req.resume:
        check_method_settings(req, method, stored, source)
    check_schedule(cfg.schedule)
    check_compile(cfg.compile)
    _prepare_method(req, method, cfg)
    if req.settings.get("bf16_weights") and req.settings.get("amp") is False:
        raise ResgrowError("bf16 weight copies (--bf16-weights) stand in for autocast's casts, so they need bf16 "
                           "autocast: drop --no-amp or --bf16-weights")
    if req.stop_after is not None and req.stop_after < 1:
        raise ResgrowError(f"--stop-after must be an epoch >= 1, not {req.stop_after}")
    if not req.resume:  # a resumed run's config trained once already: a newer rule must not strand it
        cfg.validate()
    elif cfg.eval_batch_size < 1:
        raise ResgrowError(f"--eval-batch-size must be >= 1, not {cfg.eval_batch_size}")
    return method, stored, cfg


def _open_data(req: RunRequest, cfg: TrainConfig, stored: dict | None, device):
    """The data, as the run reads it; on resume with the run's split, image size and streaming."""
    from .data.sources import data_source, load_dataset

    info = dict(stored.get("run_info", {}), data=data_source(req.data)) if stored else {}  # where the data is now
    val_size = info.get("val_size", 0) if stored else (req.val_size or 0)
    image_size = info.get("image_size") if stored else req.image_size
    stream = info.get("stream") if stored else (
        {"augment": req.stream_augment or "imagenet", "decode": req.decode or "auto"} if req.stream else None)
    if stream is None:
        if req.decode is not None:
            raise ResgrowError("--decode applies to streamed data (--stream)")
        data = load_dataset(req.data, root=req.data_dir, cache_dir=req.cache_dir, val_size=val_size, seed=cfg.seed,
                            progress=not cfg.quiet, image_size=image_size)
        return data, info, stream
    from .data.stream import open_stream, resolve_decode

    if val_size:
        raise ResgrowError("--val-size carves a split out of images in memory; a streamed set takes its test/ or val/")
    decode = stream["decode"]
    if stored and req.decode not in (None, decode):
        raise ResgrowError(f"a resumed run keeps the settings it started with; drop --decode {req.decode} (the run's: "
                           f"{decode})")
    if decode == "device":
        resolve_decode(decode, stream["augment"], device)  # one line now, not after the data is read
    return open_stream(req.data, image_size or 224, stream["augment"], decode), info, stream


def join_ranks(device: str):
    """This process's place among torchrun's processes (a single process without torchrun)."""
    from .train.device import resolve_device
    from .train.distributed import Ranks, launched

    return Ranks.from_env(resolve_device(device).type) if launched() else Ranks()


def prepare_run(req: RunRequest, label: str = ""):
    """Everything before the first epoch: the checks (before any data is read), the data, the model and the
    trainer; prints the run's header line (unless quiet). `label` prefixes its lines (runs trained together)."""
    import torch

    from .data.sources import data_source
    from .models.custom import build_model, is_custom
    from .models.family import growable_spec
    from .train.device import precision_note, resolve_device
    from .train.run_dir import check_run_dir
    from .train.trainer import Trainer

    method, stored, cfg = _checked(req)
    ranks = join_ranks(cfg.device)
    if ranks.main:  # rank 0 alone: the others would find the directory it has just begun to write
        check_run_dir(Path(req.out), req.resume)
    device = resolve_device(cfg.device)
    if ranks.several:
        cfg.quiet = cfg.quiet or not ranks.main
        if device.type == "cuda":
            cfg.device = f"cuda:{ranks.local_rank}"
    data, info, stream = _open_data(req, cfg, stored, device)
    torch.manual_seed(cfg.seed)
    model = build_model(req.arch, data.num_classes)
    if is_custom(req.arch) and growable_spec(model) is not None and not req.resume:
        method.prepare(growable_spec(model), cfg.epochs, cfg.schedule)  # before the run dir; else the Trainer says
    info = info or {"arch": req.arch, "data": data_source(req.data), "val_size": req.val_size or 0,
                    "image_size": req.image_size, "stream": stream,
                    "command": shlex.join(["resgrow", *req.command]) if req.command else None}
    trainer = Trainer(model, data, cfg, method, out=req.out, resume=req.resume, run_info=info, ranks=ranks)
    if ranks.several and ranks.main:
        print(f"{label}resgrow: {ranks.world} processes x batch {cfg.batch_size} = global batch "
              f"{ranks.world * cfg.batch_size} (lr {cfg.lr:g} as given)", file=sys.stderr)
    if not cfg.quiet:
        print(f"{label}resgrow {__version__}: {req.arch} on {trainer.data.summary()}; {trainer.device}, method "
              f"{method.describe()}; precision {precision_note(trainer.amp, trainer.device)}, layout "
              f"{trainer.layout_note}, cuda graphs {trainer.use_graphs}"
              f"{', bf16 weight copies' if trainer.runner.bf16_copies is not None else ''}", file=sys.stderr)
    return trainer
