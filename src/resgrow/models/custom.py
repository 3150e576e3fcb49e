"""A model of your own from the command line: `--arch package.module:function`.

The function is called as `function(num_classes=N)` and must return an `nn.Module` that maps a
batch of images to logits. Such a model trains at a fixed size on the same fast path as the
registry's; the growth methods need a resgrow ResNet. The name comes from the user's command line
only, never from a checkpoint: loading a checkpoint imports nothing (weights_only stays meaningful).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Callable, NamedTuple

import torch
from torch import nn

from ..errors import ResgrowError, first_line
from ..refs import is_ref, load_ref


def is_custom(arch: str) -> bool:
    return is_ref(arch)


def model_factory(arch: str) -> Callable[..., nn.Module]:
    """The function named by `module:function`; one clear error if it cannot be found."""
    fn = load_ref(arch, "--arch", "function")
    if not callable(fn):
        raise ResgrowError(f"--arch {arch!r}: {arch.partition(':')[2]!r} is not a function")
    return fn


def build_custom(arch: str, num_classes: int) -> nn.Module:
    fn = model_factory(arch)
    try:
        inspect.signature(fn).bind(num_classes=num_classes)
    except TypeError as e:  # the user's own errors inside the function keep their traceback
        raise ResgrowError(f"--arch {arch!r}: resgrow calls {fn.__name__}(num_classes={num_classes}), which its "
                           f"signature does not take ({e})") from None
    except ValueError:  # no signature to read (a builtin): let the call tell
        pass
    model = fn(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ResgrowError(f"--arch {arch!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A registry name (resnet56, ...) or package.module:function."""
    from .registry import build

    return build_custom(arch, num_classes) if is_custom(arch) else build(arch, num_classes)


class Checked(NamedTuple):
    flops: int  # forward FLOPs per image
    draws: bool  # its train-mode forward draws random numbers (dropout, stochastic depth, ...)


def check_model(model: nn.Module, input_size: tuple[int, int, int], num_classes: int) -> Checked:
    """A model not built by resgrow, checked once before it trains: it has weights to train and maps
    a batch of the data's images to one logit per class, in eval mode (evaluation) and in train mode
    (the loss). FLOPs are counted on the eval forward of one image. Neither forward leaves a trace:
    no gradients, BN statistics and the random generators as they were."""
    from ..measure.flops import forward_one_image  # here: measure imports models

    name = type(model).__name__
    if not any(p.requires_grad for p in model.parameters()):
        raise ResgrowError(f"model {name} has no trainable parameters")

    def run(forward, fails: str):
        try:
            return forward(model, input_size)
        except Exception as e:  # noqa: BLE001 - the user's forward: its first line says what does not fit
            raise ResgrowError(f"model {name} {fails} the data's {'x'.join(map(str, input_size))} images "
                               f"({type(e).__name__}: {first_line(e)})") from None

    out, flops = run(forward_one_image, "cannot take")
    _check_logits(name, out, 1, num_classes, "")
    out, draws = run(_train_forward, "fails in train mode on")
    _check_logits(name, out, 2, num_classes, " in train mode (what the loss sees; eval mode is fine)")
    return Checked(flops, draws)


def _check_logits(name: str, out, batch: int, num_classes: int, where: str) -> None:
    shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
    if shape != (batch, num_classes):
        raise ResgrowError(f"model {name} must return logits of shape (batch, {num_classes}) for the data's "
                           f"{num_classes} classes; for a batch of {batch} it returned {shape}{where}")


def _train_forward(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[object, bool]:
    """The output of a train-mode forward of two zero images (two: BN needs more than one value per
    channel), and whether it drew random numbers; then the buffers (BN statistics, counters) and the
    RNG are put back. A model's train-mode output can differ in kind from eval's (torchvision's
    Inception adds auxiliary logits)."""
    p = next(model.parameters())
    devices = [p.device] if p.device.type == "cuda" else []
    was_training = model.training
    model.train()
    try:
        with kept_buffers(model), torch.no_grad(), torch.random.fork_rng(devices=devices):
            before = _rng_states(devices)
            out = model(torch.zeros(2, *input_size, device=p.device))
            return out, any(not torch.equal(a, b) for a, b in zip(before, _rng_states(devices)))
    finally:
        model.train(was_training)


@contextlib.contextmanager
def kept_buffers(model: nn.Module):
    """Forward passes that must leave the buffers (BN statistics, counters) as they were: put them back after."""
    saved = {k: b.detach().clone() for k, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k in saved and b.shape == saved[k].shape:  # a buffer the forward replaced is its own
                    b.copy_(saved[k])


def _rng_states(cuda_devices: list) -> list[torch.Tensor]:
    return [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in cuda_devices]
