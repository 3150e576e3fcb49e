"""Depth growth: double the blocks of a stage, as pure functions model -> (new model, parameter map).

Placement (all modes): every block gets a partner right after it that starts as its copy
(weights, BN parameters and running statistics). A block that changes the shape (the first,
downsampling block of a stage) cannot be copied. Its partner is a copy of the block that follows
it, or, in a stage of one block, a fresh block whose residual branch is zero. So a stage of n
blocks always becomes 2n blocks (3-3-3 -> 6-6-6 -> 12-12-12), as both papers do.

- "interpolate" (Chang et al. 2018) and "duplicate" (LipGrow, Dong et al. 2020): the copies
  refine the ODE discretisation, so h is halved for every block of the grown stage (exactly h/2;
  the public LipGrow code's aliased factors are not reproduced). The two papers place the copies the
  same way; the two names are kept so a run says which paper it follows.
- "identity" (Net2Net-style): h is kept and every new block's residual branch starts at exactly
  zero (last BN gamma and beta = 0; in pre-activation blocks the last conv = 0), so the deeper
  model computes exactly the same function.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ResgrowError
from ..models.layers import ResidualBlock
from ..models.resnet import ResNet, spec_of

MODES = ("interpolate", "duplicate", "identity")


def _changes_shape(b: ResidualBlock) -> bool:
    return b.stride != 1 or b.in_ch != b.out_ch


def _plan(stage_blocks: list[ResidualBlock]) -> list[tuple[int | None, bool]]:
    """(source block index or None, is_new) for each block of the doubled stage."""
    plan = []
    for i, b in enumerate(stage_blocks):
        plan.append((i, False))
        if not _changes_shape(b):
            plan.append((i, True))
        elif i + 1 < len(stage_blocks):
            plan.append((i + 1, True))
        else:
            plan.append((None, True))
    return plan


def _zero_branch(block: ResidualBlock) -> list[str]:
    """Make the residual branch output exactly zero; return the names of the zeroed parameters."""
    if not block.branch_end:
        raise ResgrowError(f"{type(block).__name__} does not name the parameters its residual branch ends in "
                           "(branch_end), so a zero-branch block cannot be made")
    params = dict(block.named_parameters())
    for name in block.branch_end:
        nn.init.zeros_(params[name])
    return list(block.branch_end)


@torch.no_grad()
def deepen(model: ResNet, mode: str = "interpolate", stages=None) -> tuple[ResNet, dict[str, str]]:
    """Double the blocks of `stages` (default: all). Returns the new model (same device and dtype
    as `model`, in the same train/eval mode) and {new parameter name: old parameter name} for the
    trainer to carry optimizer state; parameters that start at zero are left out of the map."""
    if mode not in MODES:
        raise ResgrowError(f"unknown deepening mode {mode!r}; known: {', '.join(MODES)}")
    if not isinstance(model, ResNet):
        raise ResgrowError(f"cannot deepen {type(model).__name__}: only resgrow ResNets (stem + stages of resgrow blocks + head) can be deepened")
    spec = spec_of(model)  # also checks that the model is one an ArchSpec can describe
    n_stages = len(spec.blocks)
    stages = list(range(n_stages)) if stages is None else sorted(set(stages))
    if not stages or any(not 0 <= s < n_stages for s in stages):
        raise ResgrowError(f"stages {stages} out of range: the model has {n_stages} stages")

    plans = {s: _plan(list(model.stages[s].blocks)) for s in stages}
    new_h = []
    for s in range(n_stages):
        old_h = spec.h[s]
        if s not in plans:
            new_h.append(old_h)
            continue
        factor = 1.0 if mode == "identity" else 0.5
        new_h.append(tuple(old_h[src if src is not None else 0] * factor for src, _ in plans[s]))
    new_spec = spec.replace(blocks=tuple(len(plans[s]) if s in plans else n for s, n in enumerate(spec.blocks)), h=tuple(new_h))

    ref = next(model.parameters())
    new = ResNet(new_spec).to(device=ref.device, dtype=ref.dtype)
    old_sd = model.state_dict()
    new_sd = new.state_dict()
    mapping: dict[str, str] = {}
    renames: dict[str, str] = {}  # new state key prefix -> old prefix
    for s in range(n_stages):
        plan = plans.get(s, [(i, False) for i in range(spec.blocks[s])])
        for j, (src, _) in enumerate(plan):
            if src is not None:
                renames[f"stages.{s}.blocks.{j}."] = f"stages.{s}.blocks.{src}."
    for key in new_sd:
        if key.startswith("stages."):
            prefix = ".".join(key.split(".")[:4]) + "."
            if prefix not in renames:
                continue  # a fresh block: keeps its initialisation
            old_key = renames[prefix] + key[len(prefix):]
        else:
            old_key = key
        new_sd[key] = old_sd[old_key].clone()
        mapping[key] = old_key
    new.load_state_dict(new_sd)

    for s, plan in plans.items():
        for j, (src, is_new) in enumerate(plan):
            if is_new and (mode == "identity" or src is None):
                for pname in _zero_branch(new.stages[s].blocks[j]):
                    mapping.pop(f"stages.{s}.blocks.{j}.{pname}", None)
    param_names = {n for n, _ in new.named_parameters()}
    new.train(model.training)
    return new, {k: v for k, v in mapping.items() if k in param_names}
