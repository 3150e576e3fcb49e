"""Training methods that change the model's size; `baseline` keeps it fixed."""

from __future__ import annotations

from ..errors import ResgrowError
from ..refs import is_ref, load_ref
from .base import Baseline, Change, Method, MethodOptions, Option, option
from .lipgrow import LipGrow
from .mgopt import MGOpt
from .multilevel import Multilevel
from .wide2narrow import WideToNarrow
from .widen import Widen

METHODS: dict[str, type[Method]] = {m.name: m for m in (Baseline, Multilevel, LipGrow, Widen, MGOpt, WideToNarrow)}


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
    """Every registered method's options, each name once, with the methods that take it."""
    seen: dict = {}
    for name, cls in METHODS.items():
        for o in cls.options():
            seen.setdefault(o.name, (o, []))[1].append(name)
    return list(seen.values())


__all__ = ["Method", "MethodOptions", "option", "Change", "Option", "all_options", "Baseline", "Multilevel", "LipGrow",
           "METHODS", "register_method", "method_class", "method_ref", "build_method"]
