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


class RunDirectory:
    """A run's directory: its lock, run.json, the per-epoch log (metrics.jsonl/csv, TensorBoard) and checkpoints.

    Several processes (torchrun): every rank reads the checkpoint to resume; only the main one (`writes`) takes
    the lock and writes."""

    def __init__(self, path: str | os.PathLike, writes: bool = True, tensorboard: bool = False,
                 method_columns: tuple = ()):
        from ..report.metrics import MetricsLog, check_tensorboard
        from .run_lock import RunLock

        self.path, self.writes = Path(path), writes
        if tensorboard and writes:
            check_tensorboard()
        self.log = MetricsLog(self.path, tensorboard=tensorboard, method_columns=method_columns) if writes else None
        self._lock = RunLock(self.path) if writes else None

    def check(self, resume: bool) -> None:
        if self.writes:
            check_run_dir(self.path, resume)

    def open(self) -> None:
        """Take the lock (creating the directory): a second process on it stops here."""
        if self._lock is not None:
            self._lock.acquire()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self._lock is not None:
            self._lock.release()

    def never_trained(self) -> bool:
        return self.writes and never_trained(self.path)

    def rows(self) -> list[dict]:
        """The epochs logged so far (on every rank)."""
        from ..report.metrics import MetricsLog

        return MetricsLog(self.path).rows()

    def append(self, row: dict) -> None:
        if self.log is not None:
            self.log.append(row)

    def truncate(self, epoch: int) -> None:
        """Forget the epochs logged after `epoch` (a resume from an earlier checkpoint trains them again)."""
        if self.log is not None:
            self.log.truncate(epoch)

    def write_info(self, info: dict) -> None:
        import json

        from .. import atomic

        if self.writes:
            atomic.write_text(self.path / "run.json", json.dumps(info, indent=2) + "\n")

    def update_info(self, **fields) -> None:
        import json

        path = self.path / "run.json"
        if self.writes and path.is_file():
            self.write_info(dict(json.loads(path.read_text()), **fields))

    def note_machine(self, machine: dict, epoch: int) -> dict | None:
        """Record in run.json where the run goes on training from `epoch` when that differs from where it trained so
        far (`machines`: each machine with the epoch it started from). Returns the machine before, or None."""
        import json

        path = self.path / "run.json"
        if not self.writes or not path.is_file():
            return None
        info = json.loads(path.read_text())
        history = info.get("machines") or [dict({k: info.get(k) for k in machine}, from_epoch=0)]
        if all(history[-1].get(k) == v for k, v in machine.items()):
            return None
        self.write_info(dict(info, machines=[*history, dict(machine, from_epoch=epoch)]))
        return history[-1]

    def save(self, state: dict) -> None:
        from .checkpoint import save_checkpoint

        if self.writes:
            save_checkpoint(state, self.path / CHECKPOINT, keep=PREVIOUS)

    def load(self, say=None) -> tuple[dict, Path]:
        """The last checkpoint, or the one before it (`say` gets a line about that)."""
        from .checkpoint import load_run_checkpoint

        return load_run_checkpoint(self.path, say)
