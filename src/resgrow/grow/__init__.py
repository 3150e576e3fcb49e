"""Pure model transforms (no training inside): model -> (new model, parameter map)."""

from .depth import MODES as DEEPEN_MODES
from .depth import deepen
from .levels import coarse_spec, prolong, restrict, restrict_gradient
from .width import INITS as WIDEN_INITS
from .width import widen, wider_spec

__all__ = ["deepen", "DEEPEN_MODES", "widen", "wider_spec", "WIDEN_INITS", "coarse_spec", "restrict", "prolong",
           "restrict_gradient"]
