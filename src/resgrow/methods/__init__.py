"""Training methods that change the model's size; `baseline` keeps it fixed."""

from __future__ import annotations

from ..errors import ResgrowError
from .base import Baseline, Change, Method

METHODS: dict[str, type[Method]] = {"baseline": Baseline}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def build_method(name: str, **options) -> Method:
    if name not in METHODS:
        raise ResgrowError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)


__all__ = ["Method", "Change", "Baseline", "METHODS", "register_method", "build_method"]
