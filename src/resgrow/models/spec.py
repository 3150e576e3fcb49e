"""ArchSpec: the complete, serialisable description of a growable ResNet.

A spec is stored in every checkpoint and log row, so any run can be rebuilt from its files
alone. `ResNet(spec).spec == spec` always holds (see `models.resnet`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..errors import ResgrowError

BLOCK_TYPES = ("basic", "preact", "bottleneck")
SHORTCUTS = ("A", "B")  # A: parameter-free (stride + zero-pad channels); B: 1x1 projection when shapes change
STEMS = ("cifar", "imagenet")


def dashed(numbers) -> str:
    """(3, 3, 3) -> "3-3-3": how blocks per stage and widths are written everywhere."""
    return "-".join(str(n) for n in numbers)


@dataclass(frozen=True)
class ArchSpec:
    """Stem + stages + head. Stage s has `blocks[s]` blocks, residual-stream width `widths[s]`,
    inner conv width `inner_widths[s]`; block b of stage s scales its residual branch by `h[s][b]`.

    The first block of every stage but the first downsamples by 2 (the ImageNet stem and CIFAR
    nets alike); for bottleneck blocks `widths` is the expanded output width (4x the inner one).
    """

    block: str
    blocks: tuple[int, ...]
    widths: tuple[int, ...]
    h: tuple[tuple[float, ...], ...] = field(default=())
    num_classes: int = 10
    shortcut: str = "A"
    stem: str = "cifar"
    stem_width: int = 16
    inner_widths: tuple[int, ...] = field(default=())
    in_channels: int = 3

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once here so equality is on canonical values
        set_(self, "blocks", tuple(int(b) for b in self.blocks))
        set_(self, "widths", tuple(int(w) for w in self.widths))
        if not self.h:
            set_(self, "h", tuple((1.0,) * n for n in self.blocks))
        set_(self, "h", tuple(tuple(float(x) for x in stage) for stage in self.h))
        if not self.inner_widths:
            div = 4 if self.block == "bottleneck" else 1
            set_(self, "inner_widths", tuple(w // div for w in self.widths))
        set_(self, "inner_widths", tuple(int(w) for w in self.inner_widths))
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ResgrowError(f"invalid ArchSpec: {msg}")

        if self.block not in BLOCK_TYPES:
            bad(f"block type {self.block!r} is not one of {', '.join(BLOCK_TYPES)}")
        if self.shortcut not in SHORTCUTS:
            bad(f"shortcut {self.shortcut!r} is not one of {', '.join(SHORTCUTS)}")
        if self.stem not in STEMS:
            bad(f"stem {self.stem!r} is not one of {', '.join(STEMS)}")
        n = len(self.blocks)
        if n == 0:
            bad("a model needs at least one stage")
        if len(self.widths) != n or len(self.inner_widths) != n or len(self.h) != n:
            bad(f"blocks, widths, inner_widths and h must all have one entry per stage ({n})")
        if any(b < 1 for b in self.blocks):
            bad(f"every stage needs at least one block, got {self.blocks}")
        if any(len(hs) != b for hs, b in zip(self.h, self.blocks)):
            bad("h must have one step size per block of every stage")
        if min(self.widths + self.inner_widths + (self.stem_width, self.num_classes, self.in_channels)) < 1:
            bad("widths, stem_width, num_classes and in_channels must be positive")

    @property
    def depth(self) -> int:
        """Weighted layers, counted as He et al. do (convs on the main path + stem + fc)."""
        per_block = 3 if self.block == "bottleneck" else 2
        return per_block * sum(self.blocks) + 2

    def blocks_str(self) -> str:
        return dashed(self.blocks)

    def widths_str(self) -> str:
        return dashed(self.widths)

    def replace(self, **changes) -> "ArchSpec":
        """A copy with some fields changed. Changing `blocks` without `h` resets h to 1."""
        if "blocks" in changes and "h" not in changes:
            changes["h"] = ()
        if "widths" in changes and "inner_widths" not in changes:
            changes["inner_widths"] = ()
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        d["widths"] = list(self.widths)
        d["inner_widths"] = list(self.inner_widths)
        d["h"] = [list(s) for s in self.h]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ArchSpec":
        try:
            return cls(
                block=d["block"],
                blocks=tuple(d["blocks"]),
                widths=tuple(d["widths"]),
                h=tuple(tuple(s) for s in d.get("h", ())),
                num_classes=d.get("num_classes", 10),
                shortcut=d.get("shortcut", "A"),
                stem=d.get("stem", "cifar"),
                stem_width=d.get("stem_width", 16),
                inner_widths=tuple(d.get("inner_widths", ())),
                in_channels=d.get("in_channels", 3),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ResgrowError(f"invalid ArchSpec record ({type(e).__name__}: {e})") from None
