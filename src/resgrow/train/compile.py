"""Optional torch.compile of the model, inside the trainer's own CUDA-graph capture.

"blocks" (regional compilation) compiles each residual block's forward. Blocks with the same
type, shape and h share compiled code, so the compile cost scales with the number of distinct
blocks, not with depth. A size change compiles only what is new: a new h value (depth growth
halves h, 1 -> 0.5 -> 0.25) or a block shape not seen before. Inductor fuses each block's BN,
ReLU, residual add and h scaling. That cuts the kernel count, which is what limits small CIFAR nets
inside a CUDA graph. "model" compiles the whole forward: more fusion, but it recompiles after
every size change. Compile time is counted as training time (it happens during the first capture).
Experimental: the GPU gain is not measured yet (BENCHMARKS.md, pending).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ResgrowError
from ..models.resnet import ResNet

COMPILE_MODES = ("none", "blocks", "model")


def check_compile(how: str) -> None:
    if how not in COMPILE_MODES:
        raise ResgrowError(f"unknown compile mode {how!r}; known: {', '.join(COMPILE_MODES)}")


def apply_compile(model: ResNet, how: str, backend: str = "inductor") -> None:
    """Compile in place (nn.Module.compile keeps parameter names, so checkpoints do not change)."""
    check_compile(how)
    if how == "none":
        return
    # Each distinct h value (1, 0.5, 0.25, ...) and block shape is one more compiled variant.
    cfg = torch._dynamo.config
    cfg.cache_size_limit = max(cfg.cache_size_limit, 64)
    if hasattr(cfg, "accumulated_cache_size_limit"):
        cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 512)
    targets: list[nn.Module] = [b for _, _, b in model.iter_blocks()] if how == "blocks" else [model]
    for m in targets:
        m.compile(backend=backend)
