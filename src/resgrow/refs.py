"""`package.module:name` references to code of the user's own (a model factory for --arch, a method class for
--method): imported only from the command line or Python, never from a checkpoint (loading one imports nothing)."""

from __future__ import annotations

import importlib

from .errors import ResgrowError


def is_ref(text: str | None) -> bool:
    return text is not None and ":" in text


def load_ref(ref: str, flag: str, what: str):
    """The object `ref` ("package.module:name") names; one clear line if it cannot be found. `flag` and `what`
    ("--arch", "function") name it in that line."""
    module_name, _, name = ref.partition(":")
    if not module_name or not name:
        raise ResgrowError(f"{flag} {ref!r}: code of your own is named package.module:{what.split()[-1]}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ResgrowError(f"{flag} {ref!r}: cannot import {module_name!r} ({e}); is it on PYTHONPATH?") from None
    obj = getattr(module, name, None)
    if obj is None:
        raise ResgrowError(f"{flag} {ref!r}: {module_name} has no {what} {name!r}")
    return obj
