"""One training process per run directory.

Two processes started on the same --out (a job submitted twice, say) would both pass the
"new or empty" check before either writes a file, then interleave their checkpoints and logs.
An exclusive flock on `<out>/.lock`, taken before the directory is checked and held while
training, makes the second one stop with one line. The kernel drops the lock when its process
dies, so a killed run leaves nothing that blocks its --resume. A file system without locks (Lustre
mounted without flock, some NFS) trains unlocked, with a warning, rather than not at all.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from ..errors import ResgrowError

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, folder: Path):
        self.folder, self.path, self.fd = Path(folder), Path(folder) / LOCK_NAME, None

    def acquire(self) -> None:
        if self.fd is not None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResgrowError(f"cannot create run directory {self.folder} ({e.strerror or e})") from None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return
        while True:
            fd = self._open_locked(fcntl)
            if fd is None or _still_at(fd, self.path):
                break
            # Opened just before its holder removed it, locked just after: a lock on a file nobody else
            # can open, so a third process would lock the new .lock too. Take the file that is there.
            os.close(fd)
        if fd is None:
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def _open_locked(self, fcntl) -> int | None:
        """The lock file, open and locked; None on a file system without locks; an error if it is held."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):  # not "held": no locks here
                os.close(fd)
                self.path.unlink(missing_ok=True)
                print(f"resgrow: warning: the file system of {self.folder} has no file locks ({e.strerror or e}): "
                      "nothing stops a second process from training into the same run directory", file=sys.stderr)
                return None
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ResgrowError(f"run directory {self.folder} is in use by another resgrow process (pid {holder}); "
                               "wait for it to end or choose another --out") from None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: a process that opened it already finds it gone once it locks it
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _still_at(fd: int, path: Path) -> bool:
    """Is the open file `fd` the one at `path` now?"""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)
