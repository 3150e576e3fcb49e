"""Transfer operators between levels of a ResNet read as an ODE (MG/OPT, Gaedke-Merzhäuser, Kopaničáková,
Krause 2020): a fine net with L blocks per stage and step h, a coarse net with L/2 blocks and step 2h.

The first block of every stage (it may change the shape), the stem and the head are carried 1:1 by every
operator. Of the other blocks, coarse block j (j >= 1) stands where fine block 2j stands: the same time
2j h of the ODE. The operators act on block weights and BN weights and biases alike, as dicts of tensors
named as in the model; BN running statistics are never moved between levels (each level keeps its own).

- Restriction of weights (fine -> coarse), "injection": c_j = f_2j; "full" weighting:
  c_j = f_2j-1 / 4 + f_2j / 2 + f_2j+1 / 4.
- Prolongation (coarse -> fine), "constant": f_2j = f_2j+1 = c_j (and f_1 = c_1), the layout of
  `deepen(..., "duplicate")` where a stage's first block changes the shape; "linear": f_2j = c_j,
  f_2j+1 = (c_j + c_j+1) / 2 (the last fine block and f_1 take their one neighbour).
- Gradient restriction R = P^T, the adjoint of the prolongation in use: <R g, d> = <g, P d> for every coarse
  direction d, so a coarse descent direction of the first-order-corrected coarse objective (whose gradient at
  the restricted point is R g_h) prolongs to a fine descent direction. No further scale: R g_h is exactly the
  gradient of f_h(P x) with respect to the coarse x, the Galerkin choice.

The first-order (tau) correction: f~_H(x) = f_H(x) - <v, x> with v = grad f_H(Pi x_h) - R grad f_h(x_h), so
that grad f~_H(Pi x_h) = R grad f_h(x_h) (`tau_correction`).
"""

from __future__ import annotations

import torch

from ..errors import ResgrowError
from ..models.resnet import ResNet, spec_of
from ..models.spec import ArchSpec

RESTRICTIONS = ("injection", "full")
PROLONGATIONS = ("constant", "linear")


def coarse_spec(spec: ArchSpec) -> ArchSpec:
    """Half the blocks of every stage, twice the step: coarse block j takes twice fine block 2j's h."""
    if any(n % 2 or n < 4 for n in spec.blocks):
        raise ResgrowError(f"blocks {spec.blocks_str()} cannot be halved: every stage needs an even number of blocks, "
                           "at least 4 (its first block is carried, the others coarsened)")
    return spec.replace(blocks=tuple(n // 2 for n in spec.blocks),
                        h=tuple(tuple(2 * hs[2 * j] for j in range(len(hs) // 2)) for hs in spec.h))


def restriction(fine: ArchSpec, kind: str = "injection") -> list[torch.Tensor]:
    """Per stage, the (coarse blocks x fine blocks) matrix of Pi."""
    if kind not in RESTRICTIONS:
        raise ResgrowError(f"unknown restriction {kind!r}; known: {', '.join(RESTRICTIONS)}")
    out = []
    for n in _halvable(fine):
        m = torch.zeros(n // 2, n, dtype=torch.float64)
        m[0, 0] = 1.0
        for j in range(1, n // 2):
            if kind == "injection":
                m[j, 2 * j] = 1.0
            else:
                m[j, 2 * j - 1], m[j, 2 * j], m[j, 2 * j + 1] = 0.25, 0.5, 0.25
        out.append(m)
    return out


def prolongation(fine: ArchSpec, kind: str = "constant") -> list[torch.Tensor]:
    """Per stage, the (fine blocks x coarse blocks) matrix of P."""
    if kind not in PROLONGATIONS:
        raise ResgrowError(f"unknown prolongation {kind!r}; known: {', '.join(PROLONGATIONS)}")
    out = []
    for n in _halvable(fine):
        c = n // 2
        m = torch.zeros(n, c, dtype=torch.float64)
        m[0, 0] = 1.0
        for j in range(1, c):
            m[2 * j, j] = 1.0
            right = j + 1 if (kind == "linear" and j + 1 < c) else None
            m[2 * j + 1, j] = 0.5 if right else 1.0
            if right:
                m[2 * j + 1, right] = 0.5
        m[1, 1] = 1.0  # between the carried first block and coarse block 1: its one same-shaped neighbour
        out.append(m)
    return out


def _halvable(spec: ArchSpec) -> tuple[int, ...]:
    coarse_spec(spec)  # the check
    return spec.blocks


def apply(op: list[torch.Tensor], values: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """The operator `op` (per stage, a (target blocks x source blocks) matrix) on named tensors: each target
    block's tensor is the weighted sum of the source blocks' tensors of the same name; stem and head are
    carried. `names`: the target's names (a model's parameter names on the other level)."""
    out = {}
    for name in names:
        parts = name.split(".")
        if parts[0] != "stages":
            out[name] = values[name].clone()
            continue
        s, k, rest = int(parts[1]), int(parts[3]), ".".join(parts[4:])
        weights = op[s][k]
        out[name] = sum(values[f"stages.{s}.blocks.{j}.{rest}"] * float(weights[j])
                        for j in weights.nonzero().flatten().tolist())
    return out


def _params(model: ResNet) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


@torch.no_grad()
def restrict(fine: ResNet, kind: str = "injection", into: ResNet | None = None) -> ResNet:
    """The coarse net of `fine` with its parameters restricted. `into`: an existing coarse net whose
    parameters are overwritten and whose BN statistics stay its own; otherwise a new one, whose statistics
    start as the injected fine ones."""
    if not isinstance(fine, ResNet):
        raise ResgrowError(f"MG/OPT needs a resgrow ResNet, not a {type(fine).__name__}")
    spec = spec_of(fine)
    ref = next(fine.parameters())
    coarse = into if into is not None else ResNet(coarse_spec(spec)).to(ref.device, ref.dtype).train(fine.training)
    names = [n for n, _ in coarse.named_parameters()]
    for name, value in apply(restriction(spec, kind), _params(fine), names).items():
        coarse.get_parameter(name).copy_(value)
    if into is None:
        buffers = dict(fine.named_buffers())
        names = [n for n, _ in coarse.named_buffers()]
        for name, value in apply(restriction(spec, "injection"), buffers, names).items():
            coarse.get_buffer(name).copy_(value)
    return coarse


def prolong(coarse_values: dict[str, torch.Tensor], fine: ArchSpec, names: list[str], kind: str = "constant") -> dict:
    """P applied to named coarse tensors (a correction x_H - Pi x_h, say): the fine net's tensors `names`."""
    return apply(prolongation(fine, kind), coarse_values, names)


def restrict_gradient(fine_values: dict[str, torch.Tensor], fine: ArchSpec, names: list[str],
                      kind: str = "constant") -> dict:
    """R = P^T (the adjoint of prolongation `kind`) applied to named fine tensors: coarse tensors `names`."""
    return apply([m.T for m in prolongation(fine, kind)], fine_values, names)


def tau_correction(coarse_grad: dict[str, torch.Tensor], restricted_fine_grad: dict[str, torch.Tensor]) -> dict:
    """v = grad f_H(Pi x_h) - R grad f_h(x_h): subtracting <v, x> from the coarse objective makes its gradient at
    the restricted point the restricted fine gradient (first-order coherence)."""
    return {n: coarse_grad[n] - restricted_fine_grad[n] for n in coarse_grad}


def corrected_loss(loss: torch.Tensor, model: ResNet, v: dict[str, torch.Tensor]) -> torch.Tensor:
    """f~_H = f_H - <v, x> for the coarse model's parameters x."""
    return loss - sum((v[n] * p).sum() for n, p in model.named_parameters())
