"""Lipschitz upper bounds of residual blocks, as LipGrow (Dong et al. 2020) uses them.

Block bound = h * product of the bounds of the layers of its residual branch:
- conv: the spectral norm of the real operator (with its stride and padding, on the feature-map
  size the layer sees), by power iteration with conv2d and its adjoint conv_transpose2d,
  warm-started from the previous call's vector so that a few iterations per epoch suffice;
- BatchNorm (eval form): max_c |gamma_c| / sqrt(running_var_c + eps);
- ReLU: 1.
Model score = mean of the block bounds.

A ViT block (x <- x + h Attn(LN1(x)), x <- x + h MLP(LN2(x))) is bounded branch by branch, its bound the sum of
the two (`vit_block_bounds`):
- MLP branch: max |gamma_2| * ||W_fc1|| * GELU's largest slope (1.1290) * ||W_fc2||;
- attention branch: max |gamma_1| * ||W_v|| * ||W_proj||, the path through the values with the attention
  weights held fixed: each token's output is a convex combination of the tokens' values, a map of norm 1
  over tokens (max over tokens, Euclidean over channels), so only the value and output projections count;
- LayerNorm: the largest |gamma| of its affine map. The normalisation itself scales by 1 / (a token's
  standard deviation), which depends on the token and has no bound: it is left out, as the batch
  statistics are for BatchNorm in training (the running ones stand in for them there).
||W|| is the spectral norm (the largest singular value), exact, of weights of one shape at once.
"""

from __future__ import annotations

from contextlib import nullcontext

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
    w = conv.weight
    if u is None or u.shape != (1, w.shape[1], *size) or u.device != w.device:
        u = torch.randn(1, w.shape[1], *size, device=w.device)
    sigmas, (u,) = grouped_operator_norms([conv], size, [u], iters)
    return float(sigmas[0]), u


def grouped_operator_norms(convs: list[nn.Conv2d], size: tuple[int, int], starts: list[torch.Tensor], iters: int,
                           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Power iteration (u <- A^T A u with conv2d and its adjoint conv_transpose2d) for convs of one
    shape, stride and padding on inputs of one size, all at once as one grouped convolution per
    step. Returns the norms as one device tensor (no host sync) and each conv's vector for the next
    warm start. |A u| for a unit u converges to the largest singular value from below."""
    n, first = len(convs), convs[0]
    w = torch.cat([c.weight.detach().float() for c in convs])  # (n * cout, cin, k, k): group g is conv g
    cin, (h, wd) = w.shape[1], size
    kw = dict(stride=first.stride, padding=first.padding, groups=n)

    def unit(x):  # every member's vector scaled to norm 1
        flat = x.reshape(n, -1)
        return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)).reshape(1, n * cin, h, wd)

    u = unit(torch.cat([s.float() for s in starts], dim=1))
    for _ in range(max(1, iters)):
        v = F.conv2d(u, w, **kw)
        op = (_adjoint_padding(h, v.shape[2], first, 0), _adjoint_padding(wd, v.shape[3], first, 1))
        u = unit(F.conv_transpose2d(v, w, output_padding=op, **kw))
    sigmas = F.conv2d(u, w, **kw).reshape(n, -1).norm(dim=1)
    return sigmas, list(u.split(cin, dim=1))


def bn_bounds(bns: list[nn.BatchNorm2d]) -> torch.Tensor:
    """max_c |gamma_c| / sqrt(running_var_c + eps) of BNs of one width, as one device tensor."""
    gamma = torch.stack([bn.weight.detach().float() for bn in bns])
    var = torch.stack([bn.running_var.float() + bn.eps for bn in bns])
    return (gamma.abs() / var.sqrt()).amax(dim=1)


def bn_bound(bn: nn.BatchNorm2d) -> float:
    return float(bn_bounds([bn])[0])


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
    """Per-block Lipschitz bounds with warm-started power iterations (state kept between calls).

    One call costs a few dozen kernels and one host sync, whatever the depth: convs of the same
    shape and feature-map size iterate together as one grouped convolution (a 12-12-12 net has 72
    convs but 5 such groups), and BN bounds of the same width are taken together.
    """

    def __init__(self, image_size: int | tuple[int, int] = 32, iters: int = 2, cold_iters: int = 100, lock=None):
        self.image_size, self.iters, self.cold_iters = image_size, iters, cold_iters  # H or (H, W) of the model's input
        # held while a process-wide flag is changed: a lock shared by runs trained together (train/together.py)
        self.lock = lock if lock is not None else nullcontext()
        self.vectors: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def block_bounds(self, model: ResNet) -> list[float]:
        from ..models.vit import ViT

        if isinstance(model, ViT):
            return vit_block_bounds(model)
        # cuDNN autotuning off: each grouped shape runs `iters` times per call and changes with every
        # growth, so tuning never pays back (a cold, tuned call after a growth costs a thousand warm ones).
        # The flag is process-wide: no run trained together may capture meanwhile (train/together.py).
        with self.lock:
            tuned = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = False
            try:
                return self._block_bounds(model)
            finally:
                torch.backends.cudnn.benchmark = tuned

    def _block_bounds(self, model: ResNet) -> list[float]:
        sizes = block_input_sizes(model, self.image_size)
        names = {id(m): n for n, m in model.named_modules()}
        convs: dict[tuple, list] = {}  # same operator shape and input size -> [(key, layer, start vector)]
        bns: dict[tuple, list] = {}  # same width -> [layer]
        blocks = []  # per block: h and its factors as (group, kind, index in group)
        for (_, _, block), size in zip(model.iter_blocks(), sizes):
            factors, cur = [], size
            for layer in _branch_layers(block):
                if isinstance(layer, nn.Conv2d):
                    key = f"{names[id(layer)]}.weight"  # the weight's parameter name: a size change's maps use it
                    warm = self.vectors.get(key)
                    fits = warm is not None and tuple(warm.shape[2:]) == cur and warm.shape[1] == layer.in_channels
                    if not fits:  # drawn here, in forward order, so the RNG use does not depend on the grouping
                        warm = torch.randn(1, layer.in_channels, *cur, device=layer.weight.device)
                    group = (tuple(layer.weight.shape), layer.stride, layer.padding, cur, fits, layer.weight.device)
                    members = convs.setdefault(group, [])
                    factors.append((group, "conv", len(members)))
                    members.append((key, layer, warm.to(layer.weight.device)))
                    cur = _down(cur, layer.stride[0])
                else:
                    group = (layer.num_features, layer.weight.device)
                    members = bns.setdefault(group, [])
                    factors.append((group, "bn", len(members)))
                    members.append(layer)
            blocks.append((block.h, factors))
        parts, at = [], {}  # every factor of every block in one tensor: one host sync
        for group, members in convs.items():
            sigmas, vectors = grouped_operator_norms([m[1] for m in members], group[3], [m[2] for m in members],
                                                     self.iters if group[4] else self.cold_iters)
            self.vectors.update((m[0], v) for m, v in zip(members, vectors))
            at[group, "conv"] = sum(len(p) for p in parts)
            parts.append(sigmas)
        for group, members in bns.items():
            at[group, "bn"] = sum(len(p) for p in parts)
            parts.append(bn_bounds(members))
        flat = torch.cat(parts).tolist() if parts else []
        bounds = []
        for h, factors in blocks:
            bound = h
            for group, kind, i in factors:
                bound *= flat[at[group, kind] + i]
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
        # own storage: the vectors are views of a group
        return {k: v.detach().cpu().clone() for k, v in self.vectors.items()}

    def load_state_dict(self, state: dict) -> None:
        self.vectors = dict(state)


GELU_SLOPE = 1.1290  # the largest derivative of GELU, Phi(x) + x phi(x), at x = sqrt(2)


@torch.no_grad()
def vit_block_bounds(model) -> list[float]:
    """Every ViT block's bound h * (attention branch + MLP branch), as the module docstring defines them, with one
    host sync: the spectral norms of weights of one shape are computed together."""
    mats = {}  # (block, name) -> weight matrix
    for b, block in enumerate(model.blocks):
        attn_dim = block.heads * block.head_dim
        mats[b, "v"] = block.attn.qkv.weight[2 * attn_dim:]  # the value rows of every head
        mats[b, "proj"], mats[b, "fc1"], mats[b, "fc2"] = block.attn.proj.weight, block.mlp.fc1.weight, \
            block.mlp.fc2.weight
    norms = {}
    by_shape: dict[tuple, list] = {}
    for key, w in mats.items():
        by_shape.setdefault(tuple(w.shape), []).append(key)
    for keys in by_shape.values():
        sv = torch.linalg.matrix_norm(torch.stack([mats[k].detach().float() for k in keys]), ord=2)
        norms.update(zip(keys, sv))
    gammas = [(blk.norm1.weight.detach().float().abs().max(), blk.norm2.weight.detach().float().abs().max())
              for blk in model.blocks]
    parts = torch.stack([torch.stack([g1 * norms[b, "v"] * norms[b, "proj"], g2 * norms[b, "fc1"] * norms[b, "fc2"]])
                         for b, (g1, g2) in enumerate(gammas)])
    parts[:, 1] *= GELU_SLOPE
    return [blk.h * float(a + m) for blk, (a, m) in zip(model.blocks, parts.tolist())]
