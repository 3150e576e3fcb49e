"""A model of your own from the command line: `--arch package.module:function`.

The function is called as `function(num_classes=N)` and must return an `nn.Module` that maps a
batch of images to logits. Such a model trains at a fixed size on the same fast path as the
registry's; the growth methods need a resgrow ResNet. The name comes from the user's command line
only, never from a checkpoint: loading a checkpoint imports nothing (weights_only stays meaningful).
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from ..errors import ResgrowError


def is_custom(arch: str) -> bool:
    return ":" in arch


def model_factory(arch: str) -> Callable[..., nn.Module]:
    """The function named by `module:function`; one clear error if it cannot be found."""
    module_name, _, fn_name = arch.partition(":")
    if not module_name or not fn_name:
        raise ResgrowError(f"--arch {arch!r}: a model of your own is named package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ResgrowError(f"--arch {arch!r}: cannot import {module_name!r} ({e}); is it on PYTHONPATH?") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ResgrowError(f"--arch {arch!r}: {module_name} has no function {fn_name!r}")
    return fn


def build_custom(arch: str, num_classes: int) -> nn.Module:
    model = model_factory(arch)(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ResgrowError(f"--arch {arch!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A registry name (resnet56, ...) or package.module:function."""
    from .registry import build

    return build_custom(arch, num_classes) if is_custom(arch) else build(arch, num_classes)
