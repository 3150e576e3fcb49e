"""Residual blocks with an explicit step size h: x_{k+1} = shortcut(x_k) + h * F(x_k).

Each block keeps the numbers it was built from (in/out/inner width, stride, h, shortcut type)
so that the model's ArchSpec can be read back from the modules and `grow/` can copy blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """He et al. option A: subsample by the stride and zero-pad the new channels (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d without the `num_batches_tracked` counter update.

    torch's BN adds 1 to that counter on every training forward: one extra kernel per BN per
    step (55 of a resnet56 step's ~600 kernels), for a number that only matters when
    momentum=None. Here it is skipped unless momentum is None. The output, the running statistics
    and the state-dict keys are torch's; the counter simply stays where it was.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.momentum is None:
            return super().forward(x)
        self._check_input_dim(x)
        stats = not self.training or self.track_running_stats  # as torch decides it
        return F.batch_norm(x, self.running_mean if stats else None, self.running_var if stats else None,
                            self.weight, self.bias, self.training or self.running_mean is None,
                            self.momentum, self.eps)


def make_shortcut(kind: str, cin: int, cout: int, stride: int, norm: bool) -> nn.Module:
    """Identity when shapes match; otherwise option A (pad) or B (1x1 projection, + BN if `norm`)."""
    if cin == cout and stride == 1:
        return nn.Identity()
    if kind == "A":
        if cout < cin:
            raise ValueError(f"shortcut A cannot reduce channels ({cin} -> {cout}); use shortcut B")
        return PadShortcut(cin, cout, stride)
    layers = [conv1x1(cin, cout, stride)]
    if norm:
        layers.append(BatchNorm2d(cout))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Common bookkeeping (widths, stride, step size h, shortcut kind); subclasses define `forward`, ending
    in `residual(shortcut, branch)`, and name the parameters their branch ends in (`branch_end`)."""

    kind = ""
    # The parameters the residual branch's output is linear in (its last BN's affine, or its last conv
    # when no BN follows): scaling them by h scales the branch by h. Depth growth zeroes them for an
    # exact identity block; the fast training step folds h into them (Bf16Weights, `fold_h`).
    branch_end: tuple[str, ...] = ()
    # True only while a training step runs on parameters with h folded in: the add is then a plain one.
    h_folded = False

    def __init__(self, cin: int, cout: int, stride: int, h: float, shortcut: str, mid: int) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.mid_ch = cin, cout, mid
        self.register_buffer("h_tensor", None, persistent=False)  # see use_tensor_h
        self.stride, self.h, self.shortcut_kind = stride, float(h), shortcut

    @property
    def h(self) -> float:
        return self._h

    @h.setter
    def h(self, value: float) -> None:
        self._h = float(value)
        if self.h_tensor is not None:
            with torch.no_grad():
                self.h_tensor.fill_(self._h)

    def use_tensor_h(self) -> None:
        """Read h from a (non-persistent) buffer instead of a Python float. torch.compile bakes a float
        into the compiled code, so every new h (depth growth halves it) would compile every block
        again; a tensor is an input, and blocks that differ only in h share one compiled graph."""
        if self.h_tensor is None:
            self.h_tensor = torch.tensor(self._h, device=next(self.parameters()).device)

    def residual(self, sc: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """sc + h * r; one kernel for a float h (add with alpha), not a multiply and an add. Its backward
        still scales the branch's gradient by h, one more kernel per block, unless h is folded in."""
        if self.h_folded:
            return sc + r
        if self.h_tensor is not None:
            # Compiled blocks only, where inductor fuses this. Not addcmul: CUDA autocast runs addcmul in
            # the widest input type, and the fp32 h would turn the bf16 residual stream into fp32.
            return sc + r * self.h_tensor
        return sc + r if self._h == 1.0 else torch.add(sc, r, alpha=self._h)

    def extra_repr(self) -> str:
        return f"h={self._h:g}"


class BasicBlock(ResidualBlock):
    """Post-activation basic block (He et al. 2016a): relu(shortcut(x) + h * bn(conv(relu(bn(conv(x))))))."""

    kind = "basic"
    branch_end = ("bn2.weight", "bn2.bias")

    def __init__(self, cin, cout, stride=1, h=1.0, shortcut="A", mid=None):
        mid = mid or cout
        super().__init__(cin, cout, stride, h, shortcut, mid)
        self.conv1, self.bn1 = conv3x3(cin, mid, stride), BatchNorm2d(mid)
        self.conv2, self.bn2 = conv3x3(mid, cout), BatchNorm2d(cout)
        self.shortcut = make_shortcut(shortcut, cin, cout, stride, norm=True)

    def forward(self, x):
        r = F.relu(self.bn1(self.conv1(x)))
        r = self.bn2(self.conv2(r))
        return F.relu(self.residual(self.shortcut(x), r))


class PreActBlock(ResidualBlock):
    """Pre-activation block (He et al. 2016b), as used by Chang et al. and wide ResNets:
    shortcut(x) + h * conv(relu(bn(conv(relu(bn(x)))))). A projection shortcut sees the
    pre-activated input, as in the reference implementation."""

    kind = "preact"
    branch_end = ("conv2.weight",)

    def __init__(self, cin, cout, stride=1, h=1.0, shortcut="A", mid=None):
        mid = mid or cout
        super().__init__(cin, cout, stride, h, shortcut, mid)
        self.bn1, self.conv1 = BatchNorm2d(cin), conv3x3(cin, mid, stride)
        self.bn2, self.conv2 = BatchNorm2d(mid), conv3x3(mid, cout)
        self.shortcut = make_shortcut(shortcut, cin, cout, stride, norm=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        sc = self.shortcut(o) if isinstance(self.shortcut, nn.Sequential) else self.shortcut(x)
        r = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return self.residual(sc, r)


class Bottleneck(ResidualBlock):
    """Post-activation bottleneck (1x1 -> 3x3 (strided) -> 1x1), the ResNet-50 block."""

    kind = "bottleneck"
    branch_end = ("bn3.weight", "bn3.bias")

    def __init__(self, cin, cout, stride=1, h=1.0, shortcut="B", mid=None):
        mid = mid or cout // 4
        super().__init__(cin, cout, stride, h, shortcut, mid)
        self.conv1, self.bn1 = conv1x1(cin, mid), BatchNorm2d(mid)
        self.conv2, self.bn2 = conv3x3(mid, mid, stride), BatchNorm2d(mid)
        self.conv3, self.bn3 = conv1x1(mid, cout), BatchNorm2d(cout)
        self.shortcut = make_shortcut(shortcut, cin, cout, stride, norm=True)

    def forward(self, x):
        r = F.relu(self.bn1(self.conv1(x)))
        r = F.relu(self.bn2(self.conv2(r)))
        r = self.bn3(self.conv3(r))
        return F.relu(self.residual(self.shortcut(x), r))


BLOCKS: dict[str, type[ResidualBlock]] = {b.kind: b for b in (BasicBlock, PreActBlock, Bottleneck)}


class Stage(nn.Module):
    """An ordered list of residual blocks; the first may downsample."""

    def __init__(self, blocks: list[ResidualBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x
