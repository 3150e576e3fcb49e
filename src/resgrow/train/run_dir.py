"""A run directory is never overwritten: what may be written into it, and when."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ResgrowError
from .checkpoint import CHECKPOINT, PREVIOUS
from .run_lock import LOCK_NAME


def check_run_dir(out: Path | None, resume: bool) -> None:
    """A run directory is never overwritten: it must be new or empty, unless resuming from its checkpoint."""
    if out is None:
        if resume:
            raise ResgrowError("resume needs a run directory")
        return
    if out.exists() and not out.is_dir():
        raise ResgrowError(f"run directory {out} exists and is not a directory")
    if not out.exists():  # said now, before the data is read, rather than when the first epoch starts
        parent = out.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ResgrowError(f"cannot create run directory {out}: {parent} is not a writable directory")
    if resume:
        if not out.exists():
            raise ResgrowError(f"cannot resume: run directory {out} does not exist (a new run needs no --resume)")
        if not has_checkpoint(out):
            hint = "; it never finished an epoch: start it again without --resume" if never_trained(out) else ""
            raise ResgrowError(f"cannot resume: {out} has no {CHECKPOINT}{hint}")
    elif out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()) and not never_trained(out):
        raise ResgrowError(f"run directory {out} already exists and is not empty; "
                           "pass --resume to continue it or choose another --out")


def never_trained(out: Path) -> bool:
    """A run directory that holds only the run.json of a resgrow run stopped (Ctrl-C, a crash, a kill) before
    its first epoch ended: no checkpoint, no logged epoch. Nothing is lost by starting it again, and
    neither a new run nor --resume could go on otherwise. (A lock left by a killed process is no run.)"""
    import json

    if not out.is_dir() or {p.name for p in out.iterdir()} - {LOCK_NAME} != {"run.json"}:
        return False
    try:
        info = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and {"config", "method", "torch"} <= set(info)


def has_checkpoint(out: Path) -> bool:
    """A run directory with a checkpoint to go on from: the last one, or the one before it."""
    return (out / CHECKPOINT).is_file() or (out / PREVIOUS).is_file()
