"""Parameter groups with learning-rate scales that a method changes between steps without a new capture.

A method may split the model's parameters into groups (`Method.param_groups`), each trained at the
schedule's lr times its scale (timm's `lr_scale`). On the CUDA-graph path the scales live in one device
tensor and every group's lr is computed from it inside the captured step (one kernel), so changing a scale
is a copy into that tensor, never a new capture. Eagerly, each group's lr is set before every step.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from ..errors import ResgrowError


class LrGroups:
    def __init__(self, device: torch.device, graphs: bool):
        self.device, self.graphs = device, graphs
        self.scales: dict[str, float] = {}  # every group's current scale: what a checkpoint keeps
        self.names: list[str] = []  # the groups of the optimizer, in its order; [] for one plain group
        self._scales = self._lrs = None  # device tensors of the captured path

    def optimizer_groups(self, model: nn.Module, groups, lr) -> list | None:
        """[(parameters, lr)] for `make_sgd` from the method's groups (None: one plain group). A group whose
        name was known keeps its current scale; new ones start at theirs."""
        if groups is None:
            self.names, self._scales, self._lrs = [], None, None
            return None
        named = dict(model.named_parameters())
        count = Counter(n for g in groups for n in g.params)
        wrong = ([f"{n} is in {k} groups" for n, k in count.items() if k > 1]
                 + [f"{n} is not a parameter" for n in count if n not in named]
                 + [f"{n} is in no group" for n in named if n not in count])
        if wrong or len({g.name for g in groups}) != len(groups):
            raise ResgrowError("a method's parameter groups must hold every parameter once, under distinct names: "
                               + "; ".join((wrong or ["two groups share a name"])[:3]))
        self.scales = {g.name: self.scales.get(g.name, float(g.lr_scale)) for g in groups}
        self.names = [g.name for g in groups]
        if self.graphs:
            self._scales = torch.tensor([self.scales[n] for n in self.names], device=self.device)
            self._lrs = torch.empty_like(self._scales)
            lrs = list(self._lrs.unbind())  # each group's lr: a view the captured step writes before SGD reads it
        else:
            lrs = [lr * self.scales[n] for n in self.names]
        return [([named[p] for p in g.params], group_lr) for g, group_lr in zip(groups, lrs)]

    def before_step(self, lr: torch.Tensor) -> None:
        """Inside the captured step: every group's lr from the schedule's lr tensor and the scales."""
        torch.mul(lr, self._scales, out=self._lrs)

    @property
    def captured(self) -> bool:
        return self._lrs is not None

    def set_eager(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        if not self.names:
            for g in optimizer.param_groups:
                g["lr"] = lr
            return
        for g, name in zip(optimizer.param_groups, self.names, strict=True):
            g["lr"] = lr * self.scales[name]

    def update(self, values: dict) -> None:
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise ResgrowError(f"no parameter group named {', '.join(unknown)} (groups: "
                               f"{', '.join(self.names) or 'none'})")
        self.scales.update({k: float(v) for k, v in values.items()})
        if self._scales is not None:
            self._scales.copy_(torch.tensor([self.scales[n] for n in self.names]))


class SliceScales:
    """A method's per-element groups (`Method.slice_groups`): each grouped parameter gets a mask of its elements'
    scales, which a gradient hook multiplies in during the backward (so a captured step does too). A new scale
    rewrites the masks between steps; the captured step reads them in place.

    `updates=True` (an optimizer that normalises the gradient, AdamW, which a scaled gradient would not move):
    the mask scales each element's whole update instead, the optimizer's step between `before_step` (the weights
    kept) and `after_step` (w = w_before + mask * (w - w_before)); decoupled weight decay is part of the update."""

    def __init__(self, device: torch.device):
        self.device = device
        self.scales: dict[str, float] = {}
        self.names: list[str] = []
        self._ids: dict[str, torch.Tensor] = {}
        self._masks: dict[str, torch.Tensor] = {}
        self._params: list[torch.Tensor] = []  # updates=True: the grouped parameters, their kept values and masks
        self._before: list[torch.Tensor] = []
        self._weights: list[torch.Tensor] = []

    def install(self, model: nn.Module, groups, updates: bool = False) -> None:
        self._ids, self._masks, self._params, self._before, self._weights = {}, {}, [], [], []
        if groups is None:
            self.names = []
            return
        named = dict(model.named_parameters())
        self.scales = {n: self.scales.get(n, float(s)) for n, s in zip(groups.names, groups.scales)}
        self.names = list(groups.names)
        for name, ids in groups.ids.items():
            p = named[name]
            if tuple(ids.shape) != tuple(p.shape):
                raise ResgrowError(f"slice groups of {name} have shape {tuple(ids.shape)}, the parameter "
                                   f"{tuple(p.shape)}")
            self._ids[name] = ids.to(self.device, torch.long)
            self._masks[name] = torch.empty_like(p, memory_format=torch.preserve_format)
            if updates:
                self._params.append(p)
                self._before.append(torch.empty_like(p, memory_format=torch.preserve_format))
                self._weights.append(self._masks[name])
            else:
                p.register_hook(lambda grad, mask=self._masks[name]: grad * mask)
        self._fill()

    @property
    def scales_updates(self) -> bool:
        return bool(self._params)

    @torch.no_grad()
    def before_step(self) -> None:
        torch._foreach_copy_(self._before, self._params)

    @torch.no_grad()
    def after_step(self) -> None:
        """w = w_before + mask * (w - w_before): two multi-tensor kernels for all grouped parameters."""
        torch._foreach_lerp_(self._before, self._params, self._weights)
        torch._foreach_copy_(self._params, self._before)

    def _fill(self) -> None:
        table = torch.tensor([self.scales[n] for n in self.names] or [1.0], device=self.device)
        for name, mask in self._masks.items():
            mask.copy_(table[self._ids[name]])

    def update(self, values: dict) -> list[str]:
        """Take the values that name these groups; return the names left for other groups."""
        mine = {k: float(v) for k, v in values.items() if k in self.names}
        if mine:
            self.scales.update(mine)
            self._fill()
        return [k for k in values if k not in mine]
