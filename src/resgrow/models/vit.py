"""Vision transformers as residual networks: patch embedding + pre-norm blocks + head, built from a ViTSpec.

A pre-norm transformer block is two residual steps with an explicit step size h, as resgrow's ResNet blocks are:
x <- x + h * Attn(LN(x)), then x <- x + h * MLP(LN(x)). The block is a `ResidualBlock` (one h for both
branches), so the trainer's h handling (a tensor h for compiled blocks, h folded into the branches' last layers
on the fast path) applies to it unchanged, and depth growth reads h as the step of an ODE discretisation.

Sizes are for CIFAR-size images: patch 4 on 32x32 gives 64 patch tokens, plus a class token (`pool="cls"`) or
their mean (`pool="mean"`). Attention is `torch.nn.functional.scaled_dot_product_attention` (flash or
memory-efficient kernels where the device has them). Initialisation follows timm's ViT: truncated normal (std
0.02) for the linear layers, the positional embedding and the class token, zero biases, LayerNorm at identity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResgrowError
from .layers import ResidualBlock
from .spec import dashed

POOLS = ("cls", "mean")


@dataclass(frozen=True)
class ViTSpec:
    """Patch embedding of `dim` channels (the residual stream), `blocks[0]` transformer blocks of `heads` heads of
    `head_dim` channels (default dim / heads) and an MLP of `mlp_dim` hidden units, block b scaling both its
    branches by `h[0][b]`, then LayerNorm and a linear head. One stage: `blocks` and `h` are one-entry tuples, so
    that the depth methods' per-stage rules apply as they are. Width growth adds heads (head_dim kept) and MLP
    units, so `heads * head_dim` may differ from `dim`."""

    blocks: tuple[int, ...]
    dim: int
    heads: int
    mlp_dim: int
    h: tuple[tuple[float, ...], ...] = field(default=())
    head_dim: int = 0
    num_classes: int = 10
    patch: int = 4
    image_size: int = 32  # the positional embedding's grid: image_size / patch tokens a side
    in_channels: int = 3
    pool: str = "cls"

    family = "vit"  # a class attribute, written into to_dict(): checkpoints say which family they hold
    block = "vit"
    shortcut = "identity"
    stem = "patch"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once here so equality is on canonical values
        set_(self, "blocks", tuple(int(b) for b in self.blocks))
        if not self.h:
            set_(self, "h", tuple((1.0,) * n for n in self.blocks))
        set_(self, "h", tuple(tuple(float(x) for x in stage) for stage in self.h))
        for name in ("dim", "heads", "mlp_dim", "num_classes", "patch", "image_size", "in_channels", "head_dim"):
            set_(self, name, int(getattr(self, name)))
        if not self.head_dim and self.heads > 0:
            if self.dim % self.heads:
                raise ResgrowError(f"invalid ViTSpec: dim {self.dim} does not split into {self.heads} heads; give "
                                   "head_dim")
            set_(self, "head_dim", self.dim // self.heads)
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ResgrowError(f"invalid ViTSpec: {msg}")

        if len(self.blocks) != 1 or self.blocks[0] < 1:
            bad(f"a ViT has one stage of at least one block, not blocks {self.blocks}")
        if len(self.h) != 1 or len(self.h[0]) != self.blocks[0]:
            bad("h must have one step size per block")
        if min(self.dim, self.heads, self.head_dim, self.mlp_dim, self.num_classes, self.patch, self.in_channels) < 1:
            bad("dim, heads, head_dim, mlp_dim, num_classes, patch and in_channels must be positive")
        if self.image_size % self.patch:
            bad(f"image size {self.image_size} is not a multiple of the patch size {self.patch}")
        if self.pool not in POOLS:
            bad(f"pool {self.pool!r} is not one of {', '.join(POOLS)}")

    @property
    def depth(self) -> int:
        return self.blocks[0]

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.dim,)

    @property
    def inner_widths(self) -> tuple[int, ...]:
        return (self.mlp_dim,)

    @property
    def attn_dim(self) -> int:
        """The attention's inner width: its heads' channels together."""
        return self.heads * self.head_dim

    @property
    def tokens(self) -> int:
        """Tokens a block sees: the patches, and the class token with `pool="cls"`."""
        return (self.image_size // self.patch) ** 2 + (self.pool == "cls")

    def blocks_str(self) -> str:
        return dashed(self.blocks)

    def widths_str(self) -> str:
        """Width, heads (with their channels where they do not split the width) and MLP width: 192x3h/768."""
        heads = f"{self.heads}h" if self.attn_dim == self.dim else f"{self.heads}x{self.head_dim}h"
        return f"{self.dim}x{heads}/{self.mlp_dim}"

    def replace(self, **changes) -> "ViTSpec":
        """A copy with some fields changed. Changing `blocks` without `h` resets h to 1."""
        if "blocks" in changes and "h" not in changes:
            changes["h"] = ()
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"], d["h"], d["family"] = list(self.blocks), [list(s) for s in self.h], self.family
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ViTSpec":
        try:
            return cls(blocks=tuple(d["blocks"]), dim=d["dim"], heads=d["heads"], mlp_dim=d["mlp_dim"],
                       h=tuple(tuple(s) for s in d.get("h", ())), head_dim=d.get("head_dim", 0),
                       num_classes=d.get("num_classes", 10),
                       patch=d.get("patch", 4), image_size=d.get("image_size", 32),
                       in_channels=d.get("in_channels", 3), pool=d.get("pool", "cls"))
        except (KeyError, TypeError, ValueError) as e:
            raise ResgrowError(f"invalid ViTSpec record ({type(e).__name__}: {e})") from None


class Attention(nn.Module):
    """Multi-head self-attention: one linear layer for queries, keys and values (`heads` heads of `head_dim`
    channels each: rows [q of every head; k of every head; v of every head]), one for the output."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, t, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ViTBlock(ResidualBlock):
    """x + h * Attn(LN(x)), then x + h * MLP(LN(x)): a pre-norm transformer block with step size h."""

    kind = "vit"
    # Both branches end in a linear layer: zeroing (or scaling by h) its weight and bias zeroes (scales) the branch
    branch_end = ("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias")

    def __init__(self, dim: int, heads: int, mlp_dim: int, h: float = 1.0, head_dim: int | None = None) -> None:
        super().__init__(dim, dim, 1, h, "identity", mlp_dim)
        self.heads, self.head_dim = heads, head_dim or dim // heads
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, self.head_dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.residual(x, self.attn(self.norm1(x)))
        return self.residual(x, self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Images to tokens: non-overlapping patches projected to `dim` channels, the class token first, positions
    added. A ViT's stem, as a ResNet's first conv is its."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        self.proj = nn.Conv2d(spec.in_channels, spec.dim, spec.patch, stride=spec.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.dim)) if spec.pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.tokens, spec.dim))
        self.image_size = spec.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if x.shape[-2:] != (size, size):
            raise ResgrowError(f"this ViT's positional embedding is for {size}x{size} images, not "
                               f"{x.shape[-2]}x{x.shape[-1]}")
        x = self.proj(x).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed


class TokenHead(nn.Module):
    """Tokens to logits: LayerNorm, the class token (or the tokens' mean), a linear layer."""

    def __init__(self, dim: int, num_classes: int, pool: str) -> None:
        super().__init__()
        self.norm, self.fc, self.pool = nn.LayerNorm(dim), nn.Linear(dim, num_classes), pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.fc(x[:, 0] if self.pool == "cls" else x.mean(dim=1))


class ViT(nn.Module):
    """stem (patch embedding) + blocks + head, as a ResNet is stem + stages + head."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        self.stem = PatchEmbed(spec)
        self.blocks = nn.ModuleList(ViTBlock(spec.dim, spec.heads, spec.mlp_dim, h, spec.head_dim) for h in spec.h[0])
        self.head = TokenHead(spec.dim, spec.num_classes, spec.pool)
        self._geometry = (spec.patch, spec.image_size, spec.pool, spec.num_classes, spec.in_channels)
        self.aux = nn.ModuleDict()  # as ResNet.aux: modules a method trains beside the net for a while
        init_vit(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def units(self, kind: str = "block") -> list[nn.Module]:
        """The net's units in forward order, between stem and head: its one stage (the blocks in a row), or its
        blocks."""
        if kind == "stage":
            return [nn.Sequential(*self.blocks)]
        if kind == "block":
            return list(self.blocks)
        raise ResgrowError(f"unknown unit {kind!r}; known: stage, block")

    def forward_features(self, x: torch.Tensor, kind: str = "block", upto: int | None = None) -> list[torch.Tensor]:
        """The output of every block, the embedded tokens fed to the first; `upto`: stop after that block."""
        x, out = self.stem(x), []
        for block in self.units(kind)[: None if upto is None else upto + 1]:
            x = block(x)
            out.append(x)
        return out

    def iter_blocks(self):
        """Yield (0, block index, block) in forward order: one stage."""
        for b, block in enumerate(self.blocks):
            yield 0, b, block

    @property
    def spec(self) -> ViTSpec:
        """Read the architecture back from the modules (so it stays true after any edit)."""
        blocks = list(self.blocks)
        shape = {(b.in_ch, b.mid_ch, b.heads, b.head_dim) for b in blocks}
        if len(shape) != 1:
            raise ResgrowError("a ViT's blocks must share one width, MLP width and heads")
        (dim, mlp, heads, head_dim), = shape
        patch, size, pool, classes, channels = self._geometry
        return ViTSpec(blocks=(len(blocks),), dim=dim, heads=heads, mlp_dim=mlp, h=(tuple(b.h for b in blocks),),
                       head_dim=head_dim, num_classes=classes, patch=patch, image_size=size, in_channels=channels,
                       pool=pool)


def init_vit(model: nn.Module) -> None:
    """timm's ViT initialisation: truncated normal (std 0.02) for linear layers, the positional embedding and the
    class token; zero biases; LayerNorm at identity; the patch embedding as a linear layer of its fan-in."""
    if any(p.is_meta for p in model.parameters()):  # shapes only (counting FLOPs)
        return
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if isinstance(model, ViT):
        stem = model.stem
        nn.init.trunc_normal_(stem.pos_embed, std=0.02)
        if stem.cls_token is not None:
            nn.init.trunc_normal_(stem.cls_token, std=0.02)
        w = stem.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=(1 / w[0].numel()) ** 0.5)
        nn.init.zeros_(stem.proj.bias)


def vit_flops(spec: ViTSpec) -> int:
    """Forward FLOPs for one image, as torch's FlopCounterMode counts them with attention run as its two matrix
    products (scores and the weighted sum; a fused attention kernel may count nothing there): a multiply-add as 2
    in the patch embedding, every linear layer and those products, nothing for LayerNorm, softmax, GELU or adds."""
    t, d, a, m = spec.tokens, spec.dim, spec.attn_dim, spec.mlp_dim
    patches = (spec.image_size // spec.patch) ** 2
    embed = 2 * patches * d * spec.in_channels * spec.patch ** 2
    block = 2 * t * d * 3 * a + 2 * 2 * t * t * a + 2 * t * a * d + 2 * 2 * t * d * m
    return embed + spec.depth * block + 2 * d * spec.num_classes
