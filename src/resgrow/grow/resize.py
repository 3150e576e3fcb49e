"""Depth and width in one change: `resize` = `deepen` and `widen` composed, with one parameter map.

The two operators commute in what they keep: each keeps the function its own mode keeps (widen's "vt" and
"net2wider" exactly, in eval mode; deepen's "identity" exactly, "interpolate" and "duplicate" as a finer
discretisation of the same ODE), so the resized net computes what the deepened one alone would, whichever runs
first. They differ in the new units of a copied block: deepened first, a copy is widened apart from its source
(its new channels are drawn afresh); widened first, the copy repeats its source's new channels too.

The map composes the two: a parameter of the result points at the parameter of the input it comes from, through
the middle net, with the width's transform of its optimizer state where it was widened. A parameter that starts
at zero in the deeper net (a fresh block's last layer) is left out, as `deepen` leaves it out: its state starts
at zero.
"""

from __future__ import annotations

from ..errors import ResgrowError
from ..models.resnet import ResNet, spec_of
from .depth import MODES, deepen
from .width import INITS, widen

ORDERS = ("depth_first", "width_first")


def compose_maps(first: dict, second: dict) -> dict:
    """The map of two changes in a row: `first` maps the middle net's parameters to the input's, `second` the
    result's to the middle's. Entries are an old name or (old name, transform of its state); transforms chain,
    and so does their `gather` (widen's carry of old entries unchanged)."""
    out = {}
    for name, src in second.items():
        mid, outer = (src, None) if isinstance(src, str) else src
        if mid not in first:
            continue  # fresh in the middle net: nothing of the input to carry
        inner_src = first[mid]
        old, inner = (inner_src, None) if isinstance(inner_src, str) else inner_src
        out[name] = old if inner is None and outer is None else (old, _chain(inner, outer))
    return out


def _chain(inner, outer):
    if inner is None or outer is None:
        return inner or outer

    def transform(t):
        return outer(inner(t))

    def gather(t):
        return getattr(outer, "gather", outer)(getattr(inner, "gather", inner)(t))

    transform.gather = gather
    return transform


def resize(model: ResNet, blocks=None, widths=None, *, mode: str = "interpolate", init: str = "vt",
           order: str = "depth_first", stem_width: int | None = None, inner_widths=None, generator=None,
           ) -> tuple[ResNet, dict]:
    """`model` grown to `blocks` per stage (each between its blocks and twice them, as `deepen(blocks=)`) and
    to stage widths `widths` (stem and inner widths as `widen` makes them unless given); either may be left out.
    `order`: which operator runs first. Returns (the new model, {new parameter: old name or (old name,
    transform of its optimizer state)}), for `carry_state`, lr groups and the Lipschitz meter to follow."""
    if mode not in MODES or init not in INITS or order not in ORDERS:
        raise ResgrowError(f"resize takes mode {' | '.join(MODES)}, init {' | '.join(INITS)} and order "
                           f"{' | '.join(ORDERS)} (got {mode!r}, {init!r}, {order!r})")
    if not isinstance(model, ResNet):
        raise ResgrowError(f"cannot resize {type(model).__name__}: only resgrow ResNets can be resized")
    spec = spec_of(model)
    grow_depth = blocks is not None and tuple(int(b) for b in blocks) != spec.blocks
    grow_width = widths is not None and (tuple(int(w) for w in widths) != spec.widths or
                                         stem_width not in (None, spec.stem_width) or
                                         (inner_widths is not None and tuple(inner_widths) != spec.inner_widths))
    if not grow_depth and not grow_width:
        raise ResgrowError(f"resize to {spec.blocks_str()} at widths {spec.widths_str()} changes nothing: give other "
                           "blocks or widths")

    def depth(m):
        return deepen(m, mode, blocks=blocks) if grow_depth else (m, _same(m))

    def width(m):
        return widen(m, widths, init=init, stem_width=stem_width, inner_widths=inner_widths,
                     generator=generator) if grow_width else (m, _same(m))

    first, second = (depth, width) if order == "depth_first" else (width, depth)
    middle, map1 = first(model)
    new, map2 = second(middle)
    return new, compose_maps(map1, map2)


def _same(model) -> dict:
    return {n: n for n, _ in model.named_parameters()}
