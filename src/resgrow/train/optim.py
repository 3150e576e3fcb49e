"""The optimizer built for the trainer (SGD, or AdamW), and the carrying of its state across a size change."""

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


def make_adamw(model: nn.Module, lr, betas, weight_decay: float, graph: bool, groups: list | None = None,
               ) -> torch.optim.AdamW:
    """AdamW over all parameters (`groups` as for `make_sgd`), its state made up front as for SGD: both moments at
    zero and a step count of zero per parameter (on the device, for a captured step: `capturable`)."""
    kw = {"capturable": True, "foreach": True} if graph else {"foreach": True}
    params = [{"params": ps, "lr": group_lr} for ps, group_lr in groups] if groups else model.parameters()
    opt = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **kw)
    for p in model.parameters():
        step = torch.zeros((), dtype=torch.float32, device=p.device if graph else "cpu")
        opt.state[p].update(step=step, exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                            exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
    return opt


def make_optimizer(model: nn.Module, cfg, lr, graph: bool, groups: list | None = None) -> torch.optim.Optimizer:
    """The run's optimizer (`cfg.optimizer`), with its settings, over `model`'s parameters."""
    if cfg.optimizer == "adamw":
        return make_adamw(model, lr, cfg.betas, cfg.weight_decay, graph, groups)
    return make_sgd(model, lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, fused=graph, groups=groups)


def carry_state(old_model: nn.Module, old_opt: torch.optim.Optimizer, new_model: nn.Module,
                new_opt: torch.optim.Optimizer, param_map: ParamMap) -> dict[str, str]:
    """Give each new parameter the optimizer state of the old one it maps to: every state tensor of the
    parameter's shape (SGD's momentum, AdamW's moments) through the map's transform, a count (AdamW's step) as
    it was; zeros, as the new optimizer made them, where unmapped. Returns {new name: what it got}."""
    old = {n: old_opt.state.get(p, {}) for n, p in old_model.named_parameters()}
    kinds = {k: v for s in old.values() for k, v in s.items() if torch.is_tensor(v)}  # every state key, an example
    got = {}
    for name, p in new_model.named_parameters():
        src = param_map.get(name)
        got[name] = "zeros"
        state = new_opt.state[p]
        for key, example in kinds.items():  # what the new optimizer lacks starts at zero, as it would have made it
            if key not in state:
                state[key] = torch.zeros_like(example) if example.dim() == 0 else torch.zeros_like(p)
        if src is None:
            continue
        old_name, fn = (src, None) if isinstance(src, str) else src
        if old_name not in old:
            raise ResgrowError(f"size change maps {name} to {old_name}, which the old model does not have")
        for key, value in old[old_name].items():
            if not torch.is_tensor(value):
                continue
            if value.dim() == 0:  # a count: the step
                state[key].copy_(value)
                continue
            buf = fn(value) if fn else value
            if buf.shape != p.shape:
                raise ResgrowError(f"size change maps {name} {tuple(p.shape)} to state of shape {tuple(buf.shape)}")
            state[key] = buf.to(p.device, p.dtype).contiguous(memory_format=_format_of(p)).clone(
                memory_format=torch.preserve_format)
            got[name] = old_name
    return got


def state_tensors(opt: torch.optim.Optimizer, model: nn.Module) -> list[dict]:
    """Every parameter's optimizer state, in the model's parameter order, on the host: what a checkpoint keeps."""
    return [{k: v.detach().cpu() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in model.parameters()]


def load_state_tensors(opt: torch.optim.Optimizer, model: nn.Module, saved: list[dict]) -> None:
    for p, state in zip(model.parameters(), saved, strict=True):
        for k, v in state.items():
            opt.state[p][k].copy_(v)


def _format_of(p: torch.Tensor) -> torch.memory_format:
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
