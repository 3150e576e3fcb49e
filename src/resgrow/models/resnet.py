"""ResNet = stem + stages + head, built from an ArchSpec and readable back into one."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ResgrowError
from .layers import BLOCKS, BatchNorm2d, ResidualBlock, Stage
from .spec import ArchSpec


class ResNet(nn.Module):
    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        preact = spec.block == "preact"
        sw = spec.stem_width
        if spec.stem == "cifar":
            layers = [nn.Conv2d(spec.in_channels, sw, 3, padding=1, bias=False)]
        else:
            layers = [nn.Conv2d(spec.in_channels, sw, 7, stride=2, padding=3, bias=False)]
        if not preact:  # a pre-activation net normalises at the start of the first block instead
            layers += [BatchNorm2d(sw), nn.ReLU(inplace=True)]
        if spec.stem == "imagenet":
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*layers)

        block_cls = BLOCKS[spec.block]
        stages, cin = [], sw
        for s, (n, w, mid) in enumerate(zip(spec.blocks, spec.widths, spec.inner_widths)):
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and s > 0) else 1
                blocks.append(block_cls(cin, w, stride, spec.h[s][b], spec.shortcut, mid))
                cin = w
            stages.append(Stage(blocks))
        self.stages = nn.ModuleList(stages)

        head = [BatchNorm2d(cin), nn.ReLU(inplace=True)] if preact else []
        self.head = nn.Sequential(*head, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, spec.num_classes))
        self._stem_kind, self._num_classes = spec.stem, spec.num_classes
        # Modules a method trains with the net for a while, off its forward path (wide2narrow's imitation maps):
        # optimised and checkpointed with the net, not part of its spec. Empty otherwise.
        self.aux = nn.ModuleDict()
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def units(self, kind: str = "stage") -> list[nn.Module]:
        """The net's units in forward order, between stem and head: its stages, or all its blocks."""
        if kind == "stage":
            return list(self.stages)
        if kind == "block":
            return [block for _, _, block in self.iter_blocks()]
        raise ResgrowError(f"unknown unit {kind!r}; known: stage, block")

    def forward_features(self, x: torch.Tensor, kind: str = "stage", upto: int | None = None) -> list[torch.Tensor]:
        """The output of every unit (`units(kind)`), the stem's output fed to the first; `upto`: stop after that
        unit. For imitating or distilling intermediate features."""
        x, out = self.stem(x), []
        for unit in self.units(kind)[: None if upto is None else upto + 1]:
            x = unit(x)
            out.append(x)
        return out

    def iter_blocks(self):
        """Yield (stage index, block index, block) in forward order."""
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage.blocks):
                yield s, b, block

    @property
    def spec(self) -> ArchSpec:
        """Read the architecture back from the modules (so it stays true after any edit)."""
        return spec_of(self)


def spec_of(model: nn.Module) -> ArchSpec:
    if not isinstance(model, ResNet):
        raise ResgrowError(f"{type(model).__name__} is not a resgrow ResNet (stem + stages of resgrow blocks + head)")
    blocks, widths, inner, hs, kinds, shortcuts = [], [], [], [], set(), set()
    for s, stage in enumerate(model.stages):
        bl = list(stage.blocks)
        if not bl or not all(isinstance(b, ResidualBlock) for b in bl):
            raise ResgrowError(f"stage {s} must be a non-empty list of resgrow residual blocks")
        w, m = bl[0].out_ch, bl[0].mid_ch
        if any(b.out_ch != w or b.mid_ch != m for b in bl):
            raise ResgrowError(f"blocks of stage {s} have different widths; an ArchSpec needs one width per stage")
        blocks.append(len(bl))
        widths.append(w)
        inner.append(m)
        hs.append(tuple(b.h for b in bl))
        kinds |= {b.kind for b in bl}
        shortcuts |= {b.shortcut_kind for b in bl}
    if len(kinds) != 1 or len(shortcuts) != 1:
        raise ResgrowError("all blocks of a model must share one block type and one shortcut type")
    stem_conv = model.stem[0]
    return ArchSpec(
        block=kinds.pop(),
        blocks=tuple(blocks),
        widths=tuple(widths),
        h=tuple(hs),
        num_classes=model._num_classes,
        shortcut=shortcuts.pop(),
        stem=model._stem_kind,
        stem_width=stem_conv.out_channels,
        inner_widths=tuple(inner),
        in_channels=stem_conv.in_channels,
    )


def init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs, BN at identity; the usual choice for CIFAR and ImageNet ResNets."""
    if any(p.is_meta for p in model.parameters()):  # shapes only (counting FLOPs): no values to set, and slow on meta
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
