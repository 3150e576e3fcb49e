"""Files replaced atomically: a kill or a power cut leaves the old file or the new one, never half.

Checkpoints, resumed logs, run.json and the decoded-data cache all go through `atomic_open`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", keep: str | None = None, **kwargs):
    """Write to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.
    On any error the temporary file is removed and `path` is untouched. `keep`: a name beside `path` that
    the file being replaced moves to, once the new one is complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if keep is not None and path.exists():
            os.replace(path, path.with_name(keep))
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # make the rename itself survive a power cut
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", newline="") as f:
        f.write(text)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
