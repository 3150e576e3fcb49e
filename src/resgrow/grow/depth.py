"""Depth growth: double the blocks of a stage, as pure functions model -> (new model, parameter map).

Placement (all modes): every block gets a partner right after it that starts as its copy
(weights, BN parameters and running statistics). A block that changes the shape (the first,
downsampling block of a stage) cannot be copied. Its partner is a copy of the block that follows
it, or, in a stage of one block, a fresh block whose residual branch is zero. So a stage of n
blocks always becomes 2n blocks (3-3-3 -> 6-6-6 -> 12-12-12), as both papers do.

Partial growth (`blocks=`, ours, not in either paper): a stage of n blocks may grow to any m
between n and 2n. Then only m - n blocks get a partner, spread evenly over the stage (block
floor((j + 1/2) n / (m - n)) for j < m - n), and only those are split. This is what reaches depths
that no doubling reaches: 1-1-2-1 -> 2-2-4-2 -> 3-4-6-3 (ResNet-50), 3-3-3 -> 6-6-6 -> 9-9-9.

- "interpolate" (Chang et al. 2018) and "duplicate" (LipGrow, Dong et al. 2020): the copies
  refine the ODE discretisation, so a split block and its partner each get half the h of the
  block they copy (exactly h/2; the public LipGrow code's aliased factors are not reproduced). The two papers place
  the copies the same way; the two names are kept so a run says which paper it follows.
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
from ..models.spec import dashed

MODES = ("interpolate", "duplicate", "identity")


def _changes_shape(b: ResidualBlock) -> bool:
    return b.stride != 1 or b.in_ch != b.out_ch


def split_blocks(n: int, m: int) -> set[int]:
    """Which of a stage's n blocks get a partner when it grows to m blocks: m - n of them, evenly spread."""
    extra = m - n
    return {int((j + 0.5) * n / extra) for j in range(extra)}


def _plan(stage_blocks: list[ResidualBlock], m: int) -> list[tuple[int, int | None, bool]]:
    """(block whose h interval it shares, source block or None, is_new) for each block of the stage
    grown to m blocks: an old block is its own source; a partner copies its block, or the next one
    where its block changes the shape, or is a fresh zero-branch block (source None)."""
    plan = []
    split = split_blocks(len(stage_blocks), m)
    for i, b in enumerate(stage_blocks):
        plan.append((i, i, False))
        if i not in split:
            continue
        if not _changes_shape(b):
            plan.append((i, i, True))
        elif i + 1 < len(stage_blocks):
            plan.append((i, i + 1, True))
        else:
            plan.append((i, None, True))
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


def _targets(spec, stages, blocks) -> dict[int, int]:
    """{stage: blocks it grows to} for the stages that grow, from `stages` or `blocks`; errors for the rest."""
    n_stages = len(spec.blocks)
    if blocks is not None:
        if stages is not None:
            raise ResgrowError("give deepen either stages (to double) or blocks (to grow to), not both")
        blocks = tuple(int(b) for b in blocks)
        if len(blocks) != n_stages or any(not n <= m <= 2 * n for n, m in zip(spec.blocks, blocks)):
            raise ResgrowError(f"cannot grow {dashed(spec.blocks)} to {dashed(blocks)}: every stage must keep between "
                               f"its blocks and twice them ({n_stages} stages)")
        if blocks == spec.blocks:
            raise ResgrowError(f"blocks {dashed(blocks)} equal the model's: nothing to grow")
        return {s: m for s, (n, m) in enumerate(zip(spec.blocks, blocks)) if m > n}
    stages = list(range(n_stages)) if stages is None else sorted(set(stages))
    if not stages or any(not 0 <= s < n_stages for s in stages):
        raise ResgrowError(f"stages {stages} out of range: the model has {n_stages} stages")
    return {s: 2 * spec.blocks[s] for s in stages}


@torch.no_grad()
def _new_h(spec, plans: dict, factor: float) -> tuple:
    """Every stage's step sizes after the growth."""
    new_h = []
    for s in range(len(spec.blocks)):
        old_h = spec.h[s]
        if s not in plans:
            new_h.append(old_h)
            continue
        # a split block and its partner each get half the h of the block they copy; unsplit blocks keep theirs
        split = {home for home, _, is_new in plans[s] if is_new}
        new_h.append(tuple(old_h[home if src is None else src] * (factor if home in split else 1.0)
                           for home, src, _ in plans[s]))
    return tuple(new_h)


def _copy_state(model: ResNet, new: ResNet, spec, plans: dict) -> dict[str, str]:
    """Into `new`: every block's state from the block it copies, stem and head as they were; fresh blocks keep their
    initialisation. Returns {new state key: old state key}."""
    old_sd = model.state_dict()
    new_sd = new.state_dict()
    mapping: dict[str, str] = {}
    renames: dict[str, str] = {}  # new state key prefix -> old prefix
    for s in range(len(spec.blocks)):
        plan = plans.get(s, [(i, i, False) for i in range(spec.blocks[s])])
        for j, (_, src, _) in enumerate(plan):
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
    return mapping


def deepen(model: ResNet, mode: str = "interpolate", stages=None, blocks=None) -> tuple[ResNet, dict[str, str]]:
    """Double the blocks of `stages` (default: all), or grow every stage to `blocks` (each between
    its blocks and twice them: partial growth). Returns the new model (same device and dtype as
    `model`, in the same train/eval mode) and {new parameter name: old parameter name} for the
    trainer to carry optimizer state; parameters that start at zero are left out of the map. A ViT
    grows by `grow.vit.deepen_vit` (these modes and "stack")."""
    from ..models.vit import ViT

    if isinstance(model, ViT):  # one stage of transformer blocks: its own operator (grow/vit.py)
        from .vit import deepen_vit

        if stages is not None:
            raise ResgrowError("a ViT has one stage: give blocks=(m,) or nothing (double it)")
        return deepen_vit(model, mode, blocks)
    if mode not in MODES:
        raise ResgrowError(f"unknown deepening mode {mode!r}; known: {', '.join(MODES)}")
    if not isinstance(model, ResNet):
        raise ResgrowError(f"cannot deepen {type(model).__name__}: only resgrow ResNets (stem + stages of resgrow "
                           "blocks + head) can be deepened")
    spec = spec_of(model)  # also checks that the model is one an ArchSpec can describe
    targets = _targets(spec, stages, blocks)
    plans = {s: _plan(list(model.stages[s].blocks), m) for s, m in targets.items()}
    factor = 1.0 if mode == "identity" else 0.5
    new_blocks = tuple(len(plans[s]) if s in plans else n for s, n in enumerate(spec.blocks))
    new_spec = spec.replace(blocks=new_blocks, h=_new_h(spec, plans, factor))
    ref = next(model.parameters())
    new = ResNet(new_spec).to(device=ref.device, dtype=ref.dtype)
    mapping = _copy_state(model, new, spec, plans)
    for s, plan in plans.items():
        for j, (_, src, is_new) in enumerate(plan):
            if is_new and (mode == "identity" or src is None):
                for pname in _zero_branch(new.stages[s].blocks[j]):
                    mapping.pop(f"stages.{s}.blocks.{j}.{pname}", None)
    param_names = {n for n, _ in new.named_parameters()}
    new.train(model.training)
    return new, {k: v for k, v in mapping.items() if k in param_names}
