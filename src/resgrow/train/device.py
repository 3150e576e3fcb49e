"""The training device: which one, bf16 where it runs natively, deterministic kernels on request."""

from __future__ import annotations

import os
import sys

import torch

from ..errors import ResgrowError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ResgrowError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ResgrowError(f"device {name!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ResgrowError(f"device {name!r} requested but this machine has {n} CUDA device{'s' * (n != 1)} "
                           f"(cuda:0{f' to cuda:{n - 1}' if n > 1 else ''})")
    if dev.type not in ("cpu", "cuda"):
        raise ResgrowError(f"device {name!r} is not supported; use cpu or cuda")
    return dev


def bf16_autocast(wanted: bool, device: torch.device) -> bool:
    """bf16 autocast where the GPU runs it natively: compute capability 8.0 on (A100, H100, RTX 30xx and later).
    Before that (V100, T4, ...) torch emulates bf16, far slower than fp32, so the run trains in fp32 and says so."""
    if not (wanted and device.type == "cuda"):
        return False
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 8 or torch.version.hip:
        return True
    print(f"resgrow: note: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no native bf16, "
          "which the fast path uses from 8.0 on (A100, H100, RTX 30xx): training in fp32", file=sys.stderr)
    return False


def make_deterministic() -> None:
    """Deterministic kernels for this process: a run repeats bit for bit on the same GPU and software.

    cuDNN without autotuning and with deterministic algorithms only; cuBLAS with a fixed workspace
    (the variable only takes effect if set before cuBLAS starts, which the CLI guarantees); torch
    warns about any op that has no deterministic CUDA version instead of failing the run. Memory
    from torch.empty is not NaN-filled: that would add kernels, and resgrow never reads it unset.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    if hasattr(torch.utils, "deterministic"):
        torch.utils.deterministic.fill_uninitialized_memory = False
