"""SGD built for the trainer, and the carrying of its state across a size change."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ResgrowError
from ..methods.base import ParamMap


def make_sgd(model: nn.Module, lr, momentum: float, weight_decay: float, nesterov: bool, fused: bool,
             groups: list | None = None) -> torch.optim.SGD:
    """SGD over all parameters, each with a momentum buffer from the start. `groups`: [(parameters, lr)]
    that cover the model's parameters, each group with an lr of its own (a float, or a device tensor that a
    captured step reads); None: one group with `lr`.

    A zero buffer is what torch's SGD would create at the first step anyway (buf = grad), but
    having it up front keeps the optimizer state's structure fixed, which a CUDA graph needs.
    """
    kw = {"fused": True} if fused else {"foreach": True}
    params = [{"params": ps, "lr": group_lr} for ps, group_lr in groups] if groups else model.parameters()
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **kw)
    for p in model.parameters():
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return opt


def carry_state(old_model: nn.Module, old_opt: torch.optim.Optimizer, new_model: nn.Module,
                new_opt: torch.optim.Optimizer, param_map: ParamMap) -> dict[str, str]:
    """Give each new parameter the momentum of the old one it maps to (zeros if unmapped).

    Returns {new name: what it got} for logging and tests.
    """
    old = {n: old_opt.state.get(p, {}).get("momentum_buffer") for n, p in old_model.named_parameters()}
    got = {}
    for name, p in new_model.named_parameters():
        src = param_map.get(name)
        buf = None
        if src is not None:
            old_name, fn = (src, None) if isinstance(src, str) else src
            if old_name not in old:
                raise ResgrowError(f"size change maps {name} to {old_name}, which the old model does not have")
            if old[old_name] is not None:
                buf = fn(old[old_name]) if fn else old[old_name]
                if buf.shape != p.shape:
                    raise ResgrowError(f"size change maps {name} {tuple(p.shape)} to state of shape {tuple(buf.shape)}")
                buf = buf.to(p.device, p.dtype).clone(memory_format=torch.preserve_format)
                got[name] = old_name
        if buf is None:
            buf = torch.zeros_like(p)
            got[name] = "zeros"
        new_opt.state[p]["momentum_buffer"] = buf.contiguous(memory_format=_format_of(p))
    return got


def _format_of(p: torch.Tensor) -> torch.memory_format:
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
