"""Lipschitz upper bounds of residual blocks, as LipGrow (Dong et al. 2020) uses them.

Block bound = h * product of the bounds of the layers of its residual branch:
- conv: the spectral norm of the real operator (with its stride and padding, on the feature-map
  size the layer sees), by power iteration with conv2d and its adjoint conv_transpose2d,
  warm-started from the previous call's vector so that a few iterations per epoch suffice;
- BatchNorm (eval form): max_c |gamma_c| / sqrt(running_var_c + eps);
- ReLU: 1.
Model score = mean of the block bounds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.resnet import ResNet
from .flops import image_hw


def _adjoint_padding(size: int, out: int, conv: nn.Conv2d, dim: int) -> int:
    k, s, p = conv.kernel_size[dim], conv.stride[dim], conv.padding[dim]
    return size - ((out - 1) * s - 2 * p + k)


def conv_operator_norm(conv: nn.Conv2d, size: tuple[int, int], iters: int = 20, u: torch.Tensor | None = None,
                       ) -> tuple[float, torch.Tensor]:
    """Largest singular value of `conv` as a linear map on cin x H x W inputs. Returns (sigma, u),
    where u is the vector to warm-start the next call with."""
    w = conv.weight.detach().float()
    h, wd = size
    if u is None or u.shape != (1, w.shape[1], h, wd) or u.device != w.device:
        u = torch.randn(1, w.shape[1], h, wd, device=w.device)
    kw = dict(stride=conv.stride, padding=conv.padding)
    u = u / u.norm()
    for _ in range(max(1, iters)):  # u <- A^T A u, normalised
        v = F.conv2d(u, w, **kw)
        op = (_adjoint_padding(h, v.shape[2], conv, 0), _adjoint_padding(wd, v.shape[3], conv, 1))
        u = F.conv_transpose2d(v, w, output_padding=op, **kw)
        u = u / u.norm().clamp_min(1e-30)
    sigma = F.conv2d(u, w, **kw).norm()  # |A u| for unit u: converges to the largest singular value from below
    return float(sigma), u


def bn_bound(bn: nn.BatchNorm2d) -> float:
    return float((bn.weight.detach().abs() / (bn.running_var + bn.eps).sqrt()).max())


def _branch_layers(block) -> list[nn.Module]:
    """The layers of the residual branch in order (BN of a pre-activation block comes first)."""
    if block.kind == "basic":
        return [block.conv1, block.bn1, block.conv2, block.bn2]
    if block.kind == "preact":
        return [block.bn1, block.conv1, block.bn2, block.conv2]
    return [block.conv1, block.bn1, block.conv2, block.bn2, block.conv3, block.bn3]


def _down(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Output size of a 3x3/padding-1 or 1x1/padding-0 layer (and of the stem's 7x7/3 and pool 3/1) with `stride`."""
    return (-(-size[0] // stride), -(-size[1] // stride))


def block_input_sizes(model: ResNet, image_size) -> list[tuple[int, int]]:
    """Spatial size (H, W) of the input of every block, in forward order; `image_size` is H or (H, W)."""
    size = image_hw(image_size)
    if model._stem_kind == "imagenet":  # 7x7 conv with stride 2, then a 3x3 max-pool with stride 2
        size = _down(_down(size, 2), 2)
    out = []
    for _, _, block in model.iter_blocks():
        out.append(size)
        size = _down(size, block.stride)
    return out


class LipschitzMeter:
    """Per-block Lipschitz bounds with warm-started power iterations (state kept between calls)."""

    def __init__(self, image_size: int | tuple[int, int] = 32, iters: int = 2, cold_iters: int = 100):
        self.image_size, self.iters, self.cold_iters = image_size, iters, cold_iters  # H or (H, W) of the model's input
        self.vectors: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def block_bounds(self, model: ResNet) -> list[float]:
        sizes = block_input_sizes(model, self.image_size)
        names = {id(m): n for n, m in model.named_modules()}
        bounds = []
        for (_, _, block), size in zip(model.iter_blocks(), sizes):
            bound, cur = block.h, size
            for layer in _branch_layers(block):
                if isinstance(layer, nn.Conv2d):
                    key = f"{names[id(layer)]}.weight"  # the weight's parameter name: a size change's maps use it
                    warm = self.vectors.get(key)
                    warm = warm.to(layer.weight.device) if warm is not None else None
                    fits = warm is not None and tuple(warm.shape[2:]) == cur and warm.shape[1] == layer.in_channels
                    sigma, u = conv_operator_norm(layer, cur, self.iters if fits else self.cold_iters,
                                                  warm if fits else None)
                    self.vectors[key] = u
                    bound *= sigma
                    cur = _down(cur, layer.stride[0])
                else:
                    bound *= bn_bound(layer)
            bounds.append(bound)
        return bounds

    def follow(self, param_map: dict) -> None:
        """After a size change: each conv's warm-start vector follows the weights it was copied from
        (`param_map`: new parameter name -> old name, or (old name, transform)); convs without a
        source start cold. A copy's best start is its source's singular vector. Kept by position
        instead, a block would start from another conv's vector, and two iterations per epoch left
        copied blocks' bounds up to 30% low for epochs, biasing LipGrow's L0 low and its ratio high."""
        old = self.vectors
        self.vectors = {}
        for new_name, src in param_map.items():
            src = src if isinstance(src, str) else src[0]
            if src in old:
                self.vectors[new_name] = old[src]

    def score(self, model: ResNet) -> float:
        bounds = self.block_bounds(model)
        return sum(bounds) / len(bounds)

    def state_dict(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.vectors.items()}

    def load_state_dict(self, state: dict) -> None:
        self.vectors = dict(state)
