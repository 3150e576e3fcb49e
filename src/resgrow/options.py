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


@dataclass(frozen=True)
class Column:
    """A column a method adds to `resgrow compare`'s table, from a field it logs every epoch. The trainer
    writes a run's columns into its run.json, so `compare` needs no method's code to show them."""

    title: str
    field: str  # the per-epoch log field
    how: str = "mean"  # mean | sum | last: over the epochs that logged it
    fmt: str = ".3f"

    def value(self, rows: list[dict]) -> str:
        got = [r[self.field] for r in rows if isinstance(r.get(self.field), (int, float))]
        if not got:
            return "-"
        return format({"mean": sum(got) / len(got), "sum": sum(got), "last": got[-1]}[self.how], self.fmt)
