"""Training methods that change the model's size; `baseline` keeps it fixed."""

from __future__ import annotations

import dataclasses

from ..errors import ResgrowError
from ..refs import is_ref, load_ref
from .base import Baseline, Change, Method, MethodOptions, Option, option
from .compound import Compound
from .lipgrow import LipGrow
from .mgopt import MGOpt
from .multilevel import Multilevel
from .wide2narrow import WideToNarrow
from .widen import Widen

METHODS: dict[str, type[Method]] = {m.name: m for m in (Baseline, Multilevel, LipGrow, Widen, MGOpt, WideToNarrow,
                                                            Compound)}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """A registered method, or a class of your own named package.module:Class (imported, then registered under
    that name, so that its options become flags and a resume finds it)."""
    if is_ref(name) and name not in METHODS:
        cls = load_ref(name, "--method", "class")
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ResgrowError(f"--method {name!r} is not a resgrow.methods.Method subclass")
        METHODS[name] = cls
    if name not in METHODS:
        raise ResgrowError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))} (or package.module:Class)")
    return METHODS[name]


def method_ref(method: Method) -> str:
    """The name --method finds `method`'s class by: its registry name, or package.module:Class."""
    cls = type(method)
    for name, registered in METHODS.items():
        if registered is cls:
            return name
    return f"{cls.__module__}:{cls.__qualname__}"


def build_method(name: str, **options) -> Method:
    """Build a method by name; options left at None are dropped (the method's defaults), others must apply to it."""
    cls = method_class(name)
    given = {k: v for k, v in options.items() if v is not None}
    wrong = sorted(set(given) - set(cls.option_names()))
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise ResgrowError(f"{flags} does not apply to method {name!r}")
    return cls(**given)


def all_options() -> list:
    """Every registered method's options, each name once, with the methods that take it; its help begins with their
    names ("multilevel, lipgrow: ..."), each method with its own text where they describe it differently."""
    seen: dict = {}
    for name, cls in METHODS.items():
        for o in cls.options():
            seen.setdefault(o.name, []).append((name, o))
    out = []
    for declared in seen.values():
        names, helps = [n for n, _ in declared], {}
        for n, o in declared:
            if o.type is not declared[0][1].type:
                raise TypeError(f"methods {names[0]} and {n} parse --{o.name.replace('_', '-')} differently")
            helps.setdefault(o.help, []).append(n)
        help_text = "; ".join(f"{', '.join(ns)}: {h}" for h, ns in helps.items())
        out.append((dataclasses.replace(declared[0][1], help=help_text), names))
    return out


__all__ = ["Method", "MethodOptions", "option", "Change", "Option", "all_options", "Baseline", "Multilevel", "LipGrow",
           "METHODS", "register_method", "method_class", "method_ref", "build_method"]
