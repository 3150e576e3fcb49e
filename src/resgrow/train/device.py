"""The training device: which one, bf16 where it runs natively, deterministic kernels on request."""

from __future__ import annotations

import os
import sys

import torch

from ..config import PRECISIONS
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


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # Linux's names for AVX-512 BF16 and AMX-BF16


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The CPU's native bf16 instruction sets, read from /proc/cpuinfo's flags (Linux); [] where there are none
    or the file does not exist (elsewhere the CPU trains in fp32 unless told otherwise)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return []
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [f for f in NATIVE_BF16_FLAGS if f in flags]


def cpu_name() -> str:
    """The CPU's model name (Linux), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")
    except OSError:
        import platform

        return platform.processor() or "unknown CPU"


def machine_text(m: dict) -> str:
    """A machine as run.json records it, in words: the GPU or CPU, its threads and torch."""
    return f"{m.get('gpu') or m.get('cpu') or '?'}, {m.get('threads', '?')} threads, torch {m.get('torch', '?')}"


def precision_note(amp: bool, device: torch.device) -> str:
    """The precision a run trains in, and on a CPU why: for its first line and run.json."""
    if device.type != "cpu":
        return "bf16" if amp else "fp32"
    flags = cpu_bf16_flags()
    native = "native bf16: " + ", ".join(flags) if flags else "no native bf16"
    return f"{'bf16' if amp else 'fp32'} ({native} on the CPU)"


def bf16_autocast(precision: "str | bool", device: torch.device, say: bool = True) -> bool:
    """Train under bf16 autocast? `precision`: "auto" (or True), "fp32" (or False), "bf16".

    "auto" picks bf16 where the device computes it natively and fp32 elsewhere, where bf16 is emulated and
    slower than fp32: a GPU of compute capability 8.0 on (A100, H100, RTX 30xx and later), a CPU with
    AVX-512 BF16 or AMX (`cpu_bf16_flags`). "bf16" forces it (with a note where it is emulated)."""
    precision = {True: "auto", False: "fp32"}.get(precision, precision)
    if precision not in PRECISIONS:
        raise ResgrowError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return False
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        native = major >= 8 or bool(torch.version.hip)
        what = f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    else:
        native, what = bool(cpu_bf16_flags()), "this CPU (no AVX-512 BF16 or AMX)"
    if native or precision == "bf16":
        if not native and say:
            print(f"resgrow: note: {what} has no native bf16: --precision bf16 runs emulated, slower than fp32",
                  file=sys.stderr)
        return True
    if say and device.type == "cuda":
        print(f"resgrow: note: {what} has no native bf16, which the fast path uses from 8.0 on (A100, H100, "
              "RTX 30xx): training in fp32", file=sys.stderr)
    return False


# On a CPU, torch's channels_last BatchNorm backward vectorizes across channels and falls back to a slow path where
# the channel count is not a multiple of the vector width (16 floats with AVX-512), while NCHW's kernel does not care.
# Whether that outweighs NCHW's slower convolutions depends on the CPU: where AMX runs the convolutions (a Xeon of 4th
# generation or later), NCHW trains the narrow nets of width growth faster; on a CPU without AMX (an AMD EPYC with
# AVX-512 BF16), channels_last is about as fast or faster at every width measured (BENCHMARKS.md, "The CPU: bf16 and
# channels_last"; `resgrow bench --widths` times both layouts on yours).
CPU_CHANNELS_LAST_MULTIPLE = 16
NCHW_AT_ODD_WIDTHS_FLAG = "amx_bf16"


def nchw_at_odd_widths(device: torch.device) -> bool:
    """Does `device` train NCHW where a batch norm's width is not a multiple of CPU_CHANNELS_LAST_MULTIPLE? Only a
    CPU with AMX."""
    return device.type == "cpu" and NCHW_AT_ODD_WIDTHS_FLAG in cpu_bf16_flags()


def channels_last_suits(model: torch.nn.Module, device: torch.device) -> bool:
    """Is channels_last the faster layout for `model` on `device`? Always on a GPU and on a CPU without AMX; on a
    CPU with AMX only when every batch norm's channel count is a multiple of CPU_CHANNELS_LAST_MULTIPLE (NCHW
    otherwise)."""
    if not nchw_at_odd_widths(device):
        return True
    return all(m.num_features % CPU_CHANNELS_LAST_MULTIPLE == 0 for m in model.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def set_up_device(cfg) -> torch.device:
    """The run's device, and every process-wide torch setting a run makes, in one place: deterministic kernels
    (`cfg.deterministic`) or cuDNN autotuning on a GPU, and the current CUDA device (graph capture and streams use
    it)."""
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        make_deterministic()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


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
