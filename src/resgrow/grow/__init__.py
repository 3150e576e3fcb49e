"""Pure model transforms (no training inside): model -> (new model, parameter map)."""

from .depth import MODES as DEEPEN_MODES
from .depth import deepen
from .levels import coarse_spec, prolong, restrict, restrict_gradient
from .resize import ORDERS as RESIZE_ORDERS
from .resize import compose_maps, resize
from .vit import VIT_MODES, deepen_vit, widen_vit
from .width import INITS as WIDEN_INITS
from .width import widen, wider_spec

__all__ = ["deepen", "DEEPEN_MODES", "widen", "wider_spec", "WIDEN_INITS", "resize", "RESIZE_ORDERS", "compose_maps",
           "deepen_vit", "widen_vit", "VIT_MODES", "coarse_spec", "restrict", "prolong", "restrict_gradient"]
