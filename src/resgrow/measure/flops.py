"""Cost accounting: FLOPs per image of an architecture, counted by torch.utils.flop_counter."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..models.resnet import ResNet
from ..models.spec import ArchSpec


def image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from H (square) or (H, W)."""
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


@lru_cache(maxsize=256)
def flops_per_image(spec: ArchSpec, image_size: int | tuple[int, int] = 32) -> int:
    """Forward FLOPs for one image of size H or (H, W) (a multiply-add counts 2), on the meta device:
    no memory, no compute."""
    h, w = image_hw(image_size)
    with torch.device("meta"):
        model = ResNet(spec)
        x = torch.empty(1, spec.in_channels, h, w)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def module_flops_per_image(model: torch.nn.Module, input_size: tuple[int, int, int]) -> int:
    """Forward FLOPs of any model for one image of size (C, H, W): one forward pass in eval mode
    without gradients (BN running statistics are left alone), on the model's own device."""
    p = next(model.parameters(), None)
    x = torch.zeros(1, *input_size, device=p.device if p is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
