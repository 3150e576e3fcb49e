"""Pure model transforms (no training inside): model -> (new model, parameter map)."""

from .depth import MODES as DEEPEN_MODES
from .depth import deepen

__all__ = ["deepen", "DEEPEN_MODES"]
