"""Checkpoints: written atomically, loaded with weights_only=True, verified by a content digest.

torch.load does not notice changed bytes inside a tensor, so every checkpoint carries a BLAKE2
digest over all its contents; a truncated, tampered or foreign file is refused with one clear line.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch

from ..atomic import atomic_open
from ..errors import ResgrowError, first_line

# The checkpoint's layout: what `load_checkpoint` reads. 2: methods keep their options under "settings", the
# method's reference ("ref") is stored, modules a method trains with the net live in ResNet.aux.
FORMAT = 2
CHECKPOINT = "checkpoint.pt"  # its name inside a run directory
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint before it: what a run goes on from when the last is unreadable
DIGEST_KEY = "_digest"


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"V{obj!r}".encode())


def digest(obj) -> str:
    h = hashlib.blake2b(digest_size=16)
    _feed(h, obj)
    return h.hexdigest()


def save_checkpoint(obj: dict, path: str | os.PathLike, keep: str | None = None) -> None:
    """Written atomically (`atomic_open`): a crash leaves the old checkpoint. `keep`: the name beside
    `path` that the checkpoint it replaces is kept under.

    A failed write (disk full, quota, permissions) is one ResgrowError; the previous checkpoint stays.
    """
    path = Path(path)
    from .. import __version__

    payload = dict(obj, format=FORMAT, resgrow=__version__)
    payload[DIGEST_KEY] = digest(payload)
    try:
        with atomic_open(path, "wb", keep=keep) as f:
            torch.save(payload, f)
    except OSError as e:
        raise ResgrowError(f"could not write checkpoint {path} ({e.strerror or e}); the previous checkpoint, if any, "
                           "is intact: fix the cause and continue with --resume") from None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ResgrowError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ResgrowError(f"refusing checkpoint {path}: it holds objects other than tensors and plain data "
                           f"({first_line(e, 160)})") from None
    except Exception as e:  # truncated zip, not a torch file, ...
        raise ResgrowError(f"checkpoint {path} is unreadable (truncated or not a resgrow checkpoint: "
                           f"{type(e).__name__})") from None
    if not isinstance(obj, dict) or DIGEST_KEY not in obj:
        raise ResgrowError(f"checkpoint {path} is not a resgrow checkpoint (no content digest)")
    want = obj.pop(DIGEST_KEY)
    if digest(obj) != want:
        raise ResgrowError(f"checkpoint {path} is corrupt or was modified (content digest mismatch)")
    if obj.get("format") != FORMAT:
        from .. import __version__

        wrote = f"resgrow {obj['resgrow']}" if "resgrow" in obj else "an earlier resgrow"
        raise ResgrowError(f"checkpoint {path} has format {obj.get('format')}, written by {wrote}; this resgrow "
                           f"({__version__}) reads format {FORMAT}: go on with the resgrow that started the run")
    return obj


def load_run_checkpoint(out: str | os.PathLike, say=None) -> tuple[dict, Path]:
    """A run directory's last checkpoint, or the one before it when the last is missing or unreadable (a copy
    cut short, a full disk): `say` gets one line about the fallback. Returns the checkpoint and its path."""
    last, previous = Path(out) / CHECKPOINT, Path(out) / PREVIOUS
    try:
        return load_checkpoint(last), last
    except ResgrowError as e:
        if not previous.is_file():
            raise
        checkpoint = load_checkpoint(previous)
        if say is not None:
            say(f"{e}; going on from the checkpoint before it, {previous} (epoch {checkpoint.get('epoch')})")
        return checkpoint, previous
