"""Model registry: `build("resnet56")`, `spec_for("wrn16_4", num_classes=100)`, `list_models()`.

Names follow the papers: CIFAR ResNets of He et al. (6n+2 layers, 16-32-64 channels, option A
shortcuts), their pre-activation versions (Chang et al.), wide ResNets WRN-d-k (pre-activation,
projection shortcuts) and ImageNet ResNets (7x7 stem, projection shortcuts).
"""

from __future__ import annotations

import re
from typing import Callable

from ..errors import ResgrowError
from .family import Spec, model_for
from .spec import ArchSpec
from .vit import ViTSpec

_REGISTRY: dict[str, Callable[[int], Spec]] = {}


def register(name: str, fn: Callable[[int], Spec]) -> None:
    _REGISTRY[name] = fn


def cifar_resnet(depth: int, num_classes: int = 10, preact: bool = False) -> ArchSpec:
    if (depth - 2) % 6 or depth < 8:
        raise ResgrowError(f"a CIFAR ResNet has 6n+2 layers (20, 32, 44, 56, 74, 110, ...), not {depth}")
    n = (depth - 2) // 6
    return ArchSpec("preact" if preact else "basic", (n, n, n), (16, 32, 64), num_classes=num_classes, shortcut="A")


def wide_resnet(depth: int, k: int, num_classes: int = 10) -> ArchSpec:
    if (depth - 4) % 6 or depth < 10:
        raise ResgrowError(f"a wide ResNet has 6n+4 layers (16, 22, 28, 40, ...), not {depth}")
    n = (depth - 4) // 6
    return ArchSpec("preact", (n, n, n), (16 * k, 32 * k, 64 * k), num_classes=num_classes, shortcut="B")


def imagenet_resnet(blocks: tuple[int, ...], bottleneck: bool, num_classes: int = 1000) -> ArchSpec:
    widths = (256, 512, 1024, 2048) if bottleneck else (64, 128, 256, 512)
    return ArchSpec("bottleneck" if bottleneck else "basic", blocks, widths, num_classes=num_classes,
                    shortcut="B", stem="imagenet", stem_width=64)


def vit(depth: int, dim: int, num_classes: int = 10, heads: int | None = None) -> ViTSpec:
    """A ViT for 32x32 images: patch 4 (64 tokens and a class token), an MLP 4x the width, and heads of 32 channels
    unless given (small widths keep several heads, which width growth adds in pairs)."""
    return ViTSpec((depth,), dim, heads or max(1, dim // 32), 4 * dim, num_classes=num_classes)


for _d in (20, 32, 38, 44, 56, 74, 110, 146, 1202):
    register(f"resnet{_d}", lambda c, d=_d: cifar_resnet(d, c))
for _d in (20, 32, 44, 56, 74, 110):
    register(f"preact_resnet{_d}", lambda c, d=_d: cifar_resnet(d, c, preact=True))
for _d, _k in ((16, 4), (16, 8), (28, 10), (40, 4)):
    register(f"wrn{_d}_{_k}", lambda c, d=_d, k=_k: wide_resnet(d, k, c))
for _name, _blocks, _bott in (("resnet18", (2, 2, 2, 2), False), ("resnet34", (3, 4, 6, 3), False),
                              ("resnet50", (3, 4, 6, 3), True), ("resnet101", (3, 4, 23, 3), True)):
    register(_name, lambda c, b=_blocks, bo=_bott: imagenet_resnet(b, bo, c))
# DeiT's tiny and small shapes (Touvron et al. 2021) on 32x32 images
register("vit_tiny", lambda c: vit(12, 192, c, heads=3))
register("vit_small", lambda c: vit(12, 384, c, heads=6))

# Names outside the table that still follow a family's rule, e.g. preact_resnet122 (Chang et al.).
_PATTERNS = (
    (re.compile(r"preact_resnet(\d+)"), lambda m, c: cifar_resnet(int(m[1]), c, preact=True)),
    (re.compile(r"cifar_resnet(\d+)"), lambda m, c: cifar_resnet(int(m[1]), c)),
    (re.compile(r"wrn(\d+)_(\d+)"), lambda m, c: wide_resnet(int(m[1]), int(m[2]), c)),
    (re.compile(r"vit(\d+)_(\d+)"), lambda m, c: vit(int(m[1]), int(m[2]), c)),
)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_table(num_classes: int = 10) -> list[dict]:
    """One row per registered name: its family's structure, parameters and forward FLOPs per image
    (at 32x32 for the CIFAR families, 224x224 for the ImageNet ones), counted on the meta device."""
    from ..measure.flops import flops_per_image, spec_params

    rows = []
    for name in sorted(_REGISTRY, key=_natural):
        spec = _REGISTRY[name](num_classes)
        params = spec_params(spec)
        size = 224 if spec.stem == "imagenet" else 32  # a ViT's: its positional embedding's (32)
        rows.append({"name": name, "block": spec.block, "blocks": spec.blocks_str(), "widths": spec.widths_str(),
                     "shortcut": spec.shortcut, "params": params, "image_size": size,
                     "flops": flops_per_image(spec, size)})
    return rows


def _natural(name: str) -> tuple:
    """resnet20 before resnet110: family, then depth."""
    m = re.fullmatch(r"(\D+)(\d+)(.*)", name)
    return (m[1], int(m[2]), m[3]) if m else (name, 0, "")


def spec_for(name: str, num_classes: int = 10) -> Spec:
    if name in _REGISTRY:
        return _REGISTRY[name](num_classes)
    for pat, fn in _PATTERNS:
        m = pat.fullmatch(name)
        if m:
            return fn(m, num_classes)
    raise ResgrowError(f"unknown arch {name!r}; known: {', '.join(list_models())} "
                       "(or preact_resnetD / cifar_resnetD with D=6n+2, wrnD_K with D=6n+4, vitD_W: D blocks of "
                       "width W, heads of 32 channels)")


def build(name_or_spec: str | Spec, num_classes: int = 10):
    """Build a model by registry name or from a spec (ArchSpec: a ResNet; ViTSpec: a ViT)."""
    spec = name_or_spec if isinstance(name_or_spec, (ArchSpec, ViTSpec)) else spec_for(name_or_spec, num_classes)
    return model_for(spec)
