"""A resumed run keeps the settings it started with: the one comparison, for Python and the command line.

A setting that differs from the run's would silently win over half of the run (another lr, epoch count or
growth schedule), so it is refused with one line naming it. Free to change on resume: where and how
visibly the run goes on (`FREE`).
"""

from __future__ import annotations

from typing import Any, Callable

from .errors import ResgrowError

FREE = frozenset({"device", "quiet", "eval_batch_size", "workers"})  # TrainConfig fields a resume may change


def normalized(value):
    """Lists and tuples of numbers compare as lists of floats (a checkpoint stores tuples as lists)."""
    return [float(x) for x in value] if isinstance(value, (list, tuple)) else value


def differences(given: dict, run: dict) -> list[tuple[str, Any, Any]]:
    """(name, given value, the run's value) for every setting in `given` that the run records and that differs
    from it. Free settings and settings left at None (not given) never differ."""
    return [(key, value, run[key]) for key, value in given.items()
            if key not in FREE and value is not None and key in run and normalized(value) != normalized(run[key])]


def shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(f"{float(x):g}" for x in value) or "none"
    return str(value)


def said(key: str, given, had) -> str:
    return f"{key}={shown(given)} (the run's: {shown(had)})"


def refuse(differ: list[tuple[str, Any, Any]], source: str, say: Callable[[str, Any, Any], str] = said) -> None:
    """One line naming every differing setting (each as `say(name, given, the run's)`); nothing if none differ."""
    if differ:
        raise ResgrowError(f"{source} keeps the settings it started with; drop these or start a new run: "
                           + "; ".join(say(*d) for d in differ))


def check_resume(config, method, checkpoint: dict, source: str) -> None:
    """Refuse to resume `checkpoint` with a TrainConfig or method options other than the run's. Leaves `method` holding
    the run's state (its options as the run started them)."""
    differ = differences(config.to_dict(), checkpoint["config"])
    wanted = method.settings()  # the options as given, before the run's state replaces them
    method.load_state_dict(checkpoint["method"]["state"])
    differ += differences(wanted, method.settings())
    refuse(differ, source)
