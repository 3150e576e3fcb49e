"""A finished (or interrupted) run's model, on its own: load it, evaluate it on a dataset."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

from ..data.loader import EvalLoader, channel_stats
from ..data.sources import Dataset, check_recorded_data, load_dataset
from ..errors import ResgrowError, first_line
from ..models.custom import build_custom
from ..models.family import growable_spec, model_for, spec_from_dict
from .checkpoint import load_checkpoint, load_run_checkpoint
from .device import channels_last_suits, resolve_device
from .evaluation import evaluate


def load_model(path: str | os.PathLike, device="cpu", arch: str | None = None) -> nn.Module:
    """The model of a run directory (or of a checkpoint file) as of its last checkpoint, in eval mode.

    The architecture comes from the spec stored in the checkpoint, so this works after any growth.
    `model.data_cfg` (like timm's `pretrained_cfg`) says how inputs were prepared in training:
    `mean` and `std` per channel of [0, 1] pixels, `input_size` (C, H, W) and `classes`. `model.run_epoch` is the
    checkpoint's epoch.
    A run of a model of your own needs `arch`, the "package.module:function" it was trained with
    (a checkpoint never names code to import).
    """
    checkpoint, path = _load(path)
    return _model_of(checkpoint, path, arch).to(device).eval()


def _load(path: str | os.PathLike) -> tuple[dict, Path]:
    """A checkpoint file, or a run directory's last checkpoint (the one before it if the last is unreadable)."""
    path = Path(path)
    if not path.exists():
        raise ResgrowError(f"no run directory or checkpoint at {path}")
    if path.is_dir():
        return load_run_checkpoint(path, lambda line: print(f"resgrow: {line}", file=sys.stderr))
    return load_checkpoint(path), path


def _model_of(checkpoint: dict, path: Path, arch: str | None = None) -> nn.Module:
    custom = "spec" in checkpoint and checkpoint["spec"] is None
    if custom and arch is None:
        raise ResgrowError(f"checkpoint {path} holds a {checkpoint['model_class']} of your own, which resgrow cannot "
                           "rebuild by itself: pass the package.module:function it was trained with (--arch), or build "
                           "it and load_state_dict(resgrow.train.load_checkpoint(path)['model'])")
    try:
        if custom:
            model = build_custom(arch, len(checkpoint["data_cfg"]["classes"]))
            if type(model).__name__ != checkpoint["model_class"]:
                raise ResgrowError(f"--arch {arch} builds a {type(model).__name__}; {path} holds a "
                                   f"{checkpoint['model_class']}")
            model.load_state_dict(checkpoint["model"])
        else:  # the net alone: modules a method trained beside it for a while (ResNet.aux) are not part of it
            model = model_for(spec_from_dict(checkpoint["spec"]))
            model.load_state_dict({k: v for k, v in checkpoint["model"].items() if not k.startswith("aux.")})
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ResgrowError(f"checkpoint {path} does not hold a complete resgrow model ({first_line(e)})") from None
    model.data_cfg = checkpoint["data_cfg"]
    model.run_epoch = checkpoint["epoch"]
    return model


def evaluate_run(run: str | os.PathLike, data: str | None = None, split: str = "test", device: str = "auto",
                 data_dir: str = "data", cache_dir: str | None = None, image_size: int | None = None,
                 batch_size: int = 1000, arch: str | None = None) -> dict:
    """Evaluate a run's last checkpoint on `data` (default: the run's own data, with its validation
    split and image size). Returns the result with the model's epoch, blocks and widths."""
    checkpoint, path = _load(run)
    model = _model_of(checkpoint, path, arch)  # before the data: a model that cannot be rebuilt fails fast
    info, cfg = checkpoint["run_info"], checkpoint["config"]
    source = data or info.get("data")
    if source is None:
        raise ResgrowError(f"{path} does not record its data: pass the data to evaluate on")
    if data is None:
        check_recorded_data(source, path)
    own = source == info.get("data")
    val_size = info.get("val_size", 0) if own else 0
    if split == "val" and not val_size:
        raise ResgrowError("there is no val split: the run did not carve one out of train (--val-size)" if own
                           else "the val split only exists for the run's own data")
    image_size = image_size if image_size is not None else info.get("image_size")
    ds = load_dataset(source, root=data_dir, cache_dir=cache_dir, val_size=val_size, seed=cfg["seed"],
                      image_size=image_size)
    model = model.to(resolve_device(device)).eval()
    spec = growable_spec(model)
    size = ({"blocks": spec.blocks_str(), "widths": spec.widths_str()} if spec is not None
            else {"model": type(model).__name__})
    how = dict(amp=checkpoint["bf16"], channels_last=checkpoint["channels_last"])  # as the run evaluated itself
    return dict(evaluate_model(model, ds, split, batch_size, **how), data=str(source), dataset=ds.name,
                epoch=checkpoint["epoch"], epochs=cfg["epochs"], **size)


def evaluate_model(model: nn.Module, data: Dataset, split: str = "test", batch_size: int = 1000,
                   amp: bool | None = None, channels_last: bool | None = None) -> dict:
    """Loss and accuracy of `model` on a split of `data`, inputs prepared as in its training.

    Uses `model.data_cfg` when it has one (checking image size and classes against `data`);
    otherwise normalises with `data`'s own training statistics, as the trainer does. `amp`
    and `channels_last` default to what a GPU trains with (evaluate_run passes the run's own); on a CPU with AMX the
    layout also follows the widths, as in training (`channels_last_suits`).
    """
    part = getattr(data, split, None)
    if part is None:
        raise ResgrowError(f"{data.name} has no {split} split")
    _, h, w, c = part.images.shape
    cfg = getattr(model, "data_cfg", None)
    if cfg:
        if list(cfg["input_size"]) != [c, h, w]:
            tc, th, tw = cfg["input_size"]
            hint = f"; --image-size {th} brings ImageFolder images to {th}x{th}" if th == tw and tc == c else ""
            raise ResgrowError(f"the model was trained on {tc}x{th}x{tw} images (CxHxW), {data.name} has "
                               f"{c}x{h}x{w}{hint}")
        if list(cfg["classes"]) != list(data.classes):
            raise ResgrowError(f"the model was trained on classes {_short(cfg['classes'])}, {data.name} has "
                               f"{_short(data.classes)}")
        mean, std = cfg["mean"], cfg["std"]
    else:
        mean, std = channel_stats(data.train.images)
    spec = growable_spec(model)
    if spec is not None and spec.num_classes != data.num_classes:
        raise ResgrowError(f"the model has {spec.num_classes} outputs, {data.name} has {data.num_classes} classes")
    device = next(model.parameters()).device
    amp = device.type == "cuda" if amp is None else amp
    channels_last = (device.type == "cuda" if channels_last is None else channels_last) and \
        channels_last_suits(model, device)  # the trainer's rule (on a CPU with AMX, NCHW at some widths)
    loader = EvalLoader(part, batch_size, device, mean, std, channels_last=channels_last, what=split)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss, acc = evaluate(model, loader, amp)
    return {"split": split, "images": len(part), "loss": loss, "acc": acc}


def _short(names) -> str:
    names = list(names)
    return "[" + ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "") + "]"
