"""Optional torch.compile of the model, inside the trainer's own CUDA-graph capture.

"blocks" (regional compilation) compiles each residual block's forward. Blocks take h as a tensor
input (`use_tensor_h`), so on torch >= 2.5 blocks of the same type and shape share compiled code
whatever their h: the compile cost scales with the number of distinct block shapes, not with
depth, and a depth growth (new blocks of known shapes, h halved) compiles nothing new (with h as a Python
float, every block would recompile; scripts/compile_growth.py measures both).
torch 2.4 still compiles every block instance separately. Inductor fuses each block's BN,
ReLU, residual add and h scaling. That cuts the kernel count, which is what limits small CIFAR nets
inside a CUDA graph. "model" compiles the whole forward: more fusion, but it recompiles after
every size change. Compile time is counted as training time (it happens during the first capture).
Opt-in: compiled blocks shorten the step but cost tens of seconds of compiling per process, so they
pay on long runs only (BENCHMARKS.md, "Trainer speed").
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ResgrowError
from ..models.family import growable_spec

COMPILE_MODES = ("none", "blocks", "model")


def check_compile(how: str) -> None:
    if how not in COMPILE_MODES:
        raise ResgrowError(f"unknown compile mode {how!r}; known: {', '.join(COMPILE_MODES)}")


def apply_compile(model: nn.Module, how: str, backend: str = "inductor") -> None:
    """Compile in place (nn.Module.compile keeps parameter names, so checkpoints do not change)."""
    check_compile(how)
    if how == "none":
        return
    # Each distinct h value (1, 0.5, 0.25, ...) and block shape is one more compiled variant.
    cfg = torch._dynamo.config
    cfg.cache_size_limit = max(cfg.cache_size_limit, 64)
    if hasattr(cfg, "accumulated_cache_size_limit"):
        cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 512)
    growable = growable_spec(model) is not None
    if how == "blocks" and not growable:
        raise ResgrowError(f"compile mode 'blocks' compiles resgrow residual blocks; a {type(model).__name__} "
                           "has none: use compile 'model'")
    blocks = [b for _, _, b in model.iter_blocks()] if growable else []
    for b in blocks:
        b.use_tensor_h()  # h as an input, not a constant: a growth that only halves h compiles nothing new
    targets: list[nn.Module] = blocks if how == "blocks" else [model]
    for m in targets:
        m.compile(backend=backend)
