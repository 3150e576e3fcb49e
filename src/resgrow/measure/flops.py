"""Cost accounting: FLOPs per image of an architecture, counted by torch.utils.flop_counter."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models.family import Spec, model_for
from ..models.resnet import ResNet
from ..models.spec import ArchSpec
from ..models.vit import ViTSpec, vit_flops


def image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from H (square) or (H, W)."""
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


@lru_cache(maxsize=256)
def flops_per_image(spec: Spec, image_size: int | tuple[int, int] = 32) -> int:
    """Forward FLOPs for one image of size H or (H, W) (a multiply-add counts 2), as torch's
    FlopCounterMode counts them, on the meta device (no memory, no compute). Exact, and as fast for
    resnet1202 as for resnet20 (see `_linear_in_blocks`), which matters because the trainer counts
    after every growth, on the training clock. A ViT's are counted from its shapes (`vit_flops`), at the image
    size of its positional embedding, the only one it takes."""
    if isinstance(spec, ViTSpec):
        return vit_flops(spec)
    return _linear_in_blocks(spec, lambda s: _count(s, image_size))


def spec_params(spec: Spec) -> int:
    """Parameters of the model of `spec` without building it (exact; see `_linear_in_blocks`)."""
    return _linear_in_blocks(spec, _params)


def _linear_in_blocks(spec: ArchSpec, measure) -> int:
    """`measure(spec)` for a quantity that adds up over blocks (FLOPs, parameters), from nets of
    one block per stage and of two in one stage: every block of a stage after its first has the
    same shape, so the quantity is linear in the blocks per stage."""
    ones = measure(spec.replace(blocks=(1,) * len(spec.blocks)))
    total = ones
    for s, n in enumerate(spec.blocks):
        if n > 1:
            two = tuple(2 if i == s else 1 for i in range(len(spec.blocks)))
            total += (n - 1) * (measure(spec.replace(blocks=two)) - ones)
    return total


@lru_cache(maxsize=256)
def _params(spec: Spec) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in model_for(spec).parameters())


@lru_cache(maxsize=256)
def _count(spec: ArchSpec, image_size: int | tuple[int, int]) -> int:
    """Forward FLOPs of the whole net, as torch's FlopCounterMode counts them (convolutions and matrix
    products, a multiply-add as 2), from each conv's and linear layer's output shape. The net is built on
    the meta device and run on one CPU image with those layers replaced by their output shape and BN (which
    keeps the shape) skipped: the counter and meta tensors cost seconds of imports at their first use
    (`resgrow models`, a growth on the training clock), this costs milliseconds."""
    h, w = image_hw(image_size)
    total = 0

    def shaped(m):
        def forward(x):
            nonlocal total
            if isinstance(m, nn.Linear):
                total += 2 * x.shape[0] * m.out_features * m.in_features
                return x.new_zeros(x.shape[0], m.out_features)
            size = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                    for n, p, d, k, s in zip(x.shape[2:], m.padding, m.dilation, m.kernel_size, m.stride)]
            fan_in = m.in_channels // m.groups * math.prod(m.kernel_size)
            total += 2 * x.shape[0] * m.out_channels * math.prod(size) * fan_in
            return x.new_zeros(x.shape[0], m.out_channels, *size)
        return forward

    with torch.device("meta"):
        model = ResNet(spec).eval()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.forward = shaped(m)
        elif isinstance(m, nn.BatchNorm2d):
            m.forward = nn.Identity().forward
    with torch.no_grad():
        model(torch.zeros(1, spec.in_channels, h, w))
    return total


def forward_one_image(model: torch.nn.Module, input_size: tuple[int, int, int]) -> tuple[object, int]:
    """(output, forward FLOPs) of any model for one zero image of size (C, H, W): one forward pass in
    eval mode without gradients (BN running statistics are left alone), on the model's own device."""
    p = next(model.parameters(), None)
    x = torch.zeros(1, *input_size, device=p.device if p is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = model(x)
    finally:
        model.train(was_training)
    return out, int(counter.get_total_flops())


def module_flops_per_image(model: torch.nn.Module, input_size: tuple[int, int, int]) -> int:
    """Forward FLOPs of any model for one image of size (C, H, W) (`forward_one_image`)."""
    return forward_one_image(model, input_size)[1]


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
