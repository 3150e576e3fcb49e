"""Options a method declares once, as the fields of one frozen dataclass (`MethodOptions`): the command line's
flags, their parsers and help (the default included), the method card's options, the constructor's keywords and
the resume check all come from the fields. No torch here: `resgrow --help` stays fast."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable


def floats(text: str) -> tuple:
    """Comma-separated numbers, as options like --grow-at 60,110 take them."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


_PARSERS: dict[type, Callable[[str], Any]] = {bool: bool, int: int, float: float, str: str, tuple: floats}


def option(default: Any, help: str, parse: Callable[[str], Any] | None = None, default_text: str | None = None):
    """A field of a method's options. `help` says what it does; the default is added to it, from `default`, or
    `default_text` where the default is a rule rather than a value ("0.4 of the run"). `parse` reads the flag's
    text; by default from the default's type (int, float, str; bool: --name and --no-name; a tuple: numbers
    separated by commas); a default of None needs it unless the option is a string."""
    parse = parse or _PARSERS.get(type(default), str)
    return dataclasses.field(default=default, metadata={"help": help, "parse": parse, "default_text": default_text})


def _shown(value) -> str:
    """A default as the help writes it: 1,0.5 for a sequence, on/off for a switch."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Option:
    """One option as the command line sees it, derived from a field of a method's options."""

    name: str  # the field, and the method's keyword; the flag is --name-with-dashes
    help: str  # what it does and its default
    type: Callable[[str], Any] = str  # parses the flag's text

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class MethodOptions:
    """A method's options: subclass it as a frozen dataclass whose fields are `option(...)`s. `check()` refuses
    values no run can use, with one line; `normalize()` brings given values to one form (numbers to ints, a text
    of blocks to a tuple). Both run whenever options are made, so a method only ever holds valid ones."""

    def __post_init__(self):
        self.normalize()
        self.check()

    def normalize(self) -> None:
        """Bring given values to their one form, with `self.set(name, value)`."""

    def check(self) -> None:
        """Raise ResgrowError for values no run can use."""

    def set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # frozen: only while the options are made

    @classmethod
    def declared(cls) -> tuple[Option, ...]:
        return tuple(Option(f.name, _help(f), f.metadata.get("parse", str)) for f in dataclasses.fields(cls))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def settings(self) -> dict:
        """The values, as a checkpoint and run.json store them (sequences as lists)."""
        return {name: list(v) if isinstance(v, tuple) else v for name, v in self.items()}

    def items(self):
        return ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))

    @classmethod
    def from_settings(cls, values: dict):
        """The options a checkpoint stored (`settings()`)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def replace(self, **values):
        return dataclasses.replace(self, **values)


def _help(f: dataclasses.Field) -> str:
    text, rule = f.metadata.get("help", ""), f.metadata.get("default_text")
    if rule is not None:
        return f"{text} (default: {rule})"
    if f.default is None:
        return text
    if isinstance(f.default, bool):
        flag = f.name.replace("_", "-")
        return f"{text} (default {_shown(f.default)}{f'; --no-{flag} turns it off' if f.default else ''})"
    return f"{text} (default {_shown(f.default)})"


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
