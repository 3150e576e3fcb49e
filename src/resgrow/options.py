"""Options a method declares once: the command line's flags, their parsers and help, the resume check
and the card's options come from these declarations. No torch here: `resgrow --help` stays fast."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable


def floats(text: str) -> tuple:
    """Comma-separated numbers, as options like --grow-at 60,110 take them."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


@dataclass(frozen=True)
class Option:
    """An option of a method, declared once: the method's keyword argument, and from it the command
    line's flag, its parser and help, the check that `--resume` keeps it, and the card's options line."""

    name: str  # the keyword the method's constructor takes; the flag is --name-with-dashes
    help: str  # what it does and its default
    type: Callable[[str], Any] = str  # parses the flag's text

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")
