"""Growth operators for the ViT family, as pure functions model -> (new model, parameter map).

Depth (`deepen_vit`): the residual stream x <- x + h Attn(LN(x)), x <- x + h MLP(LN(x)) is read as an ODE
discretisation, as in the ResNet operators.
- "interpolate" / "duplicate" (Chang et al. 2018, LipGrow): every block gets a copy right after it and both get
  half its h (partial growth: only `blocks - n` evenly spread blocks are split). The net is a finer step of the
  same flow, not the same function.
- "identity": every copy's two branches end at zero (their last linear layer's weight and bias), h kept: the same
  function exactly.
- "stack" (G_stack, Du et al. 2024): the whole stack repeated on top of itself (b0 .. bn-1, b0 .. bn-1), h kept;
  the function changes (it is the operator that paper found to scale best, not an exact one). Doubles only.

Width (`widen_vit`): more heads (of the same head_dim) and more MLP units, both kept exactly in training and
eval mode: new units come in pairs with equal incoming weights (a head's q, k and v rows; an MLP unit's fc1 row
and bias), so both members compute the same value, and opposite outgoing weights (proj or fc2 columns Z and -Z),
so their contributions cancel ("vt", Yuan et al. 2023). V and Z are drawn at the standard deviation of the
trained layer they join (a transformer's weights sit far below He's variance: timm starts them at 0.02), and the
old weights are not rescaled: LayerNorm, not BatchNorm, follows them, so no statistics could absorb a factor.
The embedding width (the residual stream) is not widened: every LayerNorm normalises over it, and channels
added to it change every token's mean and variance, so no initialisation keeps the function; `widen_vit`
refuses it.
"""

from __future__ import annotations

import torch

from ..errors import ResgrowError
from ..models.vit import ViT
from .depth import split_blocks

VIT_MODES = ("interpolate", "duplicate", "identity", "stack")


def _blocks_plan(n: int, m: int, mode: str) -> list[tuple[int, bool, bool]]:
    """(source block, is a split block or its copy, is a copy) for each block of a stack grown from n to m."""
    if mode == "stack":
        if m != 2 * n:
            raise ResgrowError(f"stacking repeats the whole stack: {n} blocks grow to {2 * n}, not {m}")
        return [(i, False, False) for i in range(n)] + [(i, False, True) for i in range(n)]
    split, plan = split_blocks(n, m), []
    for i in range(n):
        plan.append((i, i in split, False))
        if i in split:
            plan.append((i, True, True))
    return plan


def deepen_vit(model: ViT, mode: str = "interpolate", blocks=None) -> tuple[ViT, dict[str, str]]:
    """`model` with twice its blocks, or `blocks` = (m,) with n <= m <= 2n (partial growth; not for "stack").
    Returns the new model (same device, dtype and train/eval mode) and {new parameter: old parameter}; parameters
    that start at zero ("identity"'s branch ends) are left out."""
    if mode not in VIT_MODES:
        raise ResgrowError(f"unknown deepening mode {mode!r} for a ViT; known: {', '.join(VIT_MODES)}")
    spec = model.spec
    n = spec.depth
    m = 2 * n if blocks is None else int(tuple(blocks)[0])
    if blocks is not None and (len(tuple(blocks)) != 1 or not n < m <= 2 * n):
        raise ResgrowError(f"cannot grow a ViT of {n} blocks to {'-'.join(map(str, blocks))}: one stage, between "
                           f"{n + 1} and {2 * n} blocks")
    plan = _blocks_plan(n, m, mode)
    factor = 0.5 if mode in ("interpolate", "duplicate") else 1.0
    h = tuple(spec.h[0][src] * (factor if split else 1.0) for src, split, _ in plan)
    ref = next(model.parameters())
    new = ViT(spec.replace(blocks=(m,), h=(h,))).to(device=ref.device, dtype=ref.dtype)
    old_sd, new_sd, mapping = model.state_dict(), new.state_dict(), {}
    for key in new_sd:
        old_key = key
        if key.startswith("blocks."):
            j, rest = key.split(".", 2)[1:]
            old_key = f"blocks.{plan[int(j)][0]}.{rest}"
        new_sd[key] = old_sd[old_key].clone()
        mapping[key] = old_key
    new.load_state_dict(new_sd)
    if mode == "identity":
        with torch.no_grad():
            for j, (_, _, copy) in enumerate(plan):
                for name in new.blocks[j].branch_end if copy else ():
                    new.blocks[j].get_parameter(name).zero_()
                    mapping.pop(f"blocks.{j}.{name}")
    new.train(model.training)
    params = {k for k, _ in new.named_parameters()}
    return new, {k: v for k, v in mapping.items() if k in params}


@torch.no_grad()
def widen_vit(model: ViT, heads: int | None = None, mlp_dim: int | None = None, dim: int | None = None,
              generator: torch.Generator | None = None) -> tuple[ViT, dict]:
    """`model` with `heads` heads and `mlp_dim` MLP units per block (each at least as many as now; the new ones in
    cancelling pairs, so an even number more), the function kept exactly. Returns the new model and {new parameter:
    (old parameter, transform of its optimizer state)}: old entries carried, new ones at zero."""
    spec = model.spec
    if dim is not None and dim != spec.dim:
        raise ResgrowError("a ViT's embedding width cannot grow with its function kept: every LayerNorm normalises "
                           "over it (widen its heads and MLP instead)")
    heads, mlp_dim = heads or spec.heads, mlp_dim or spec.mlp_dim
    for name, old, new in (("heads", spec.heads, heads), ("MLP units", spec.mlp_dim, mlp_dim)):
        if new < old or (new - old) % 2:
            raise ResgrowError(f"{name} grow in cancelling pairs: {old} -> {new} must add an even number, none removed")
    if (heads, mlp_dim) == (spec.heads, spec.mlp_dim):
        raise ResgrowError(f"heads {heads} and MLP width {mlp_dim} are the model's: nothing to widen")
    g = generator or torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    ref = next(model.parameters())
    wider = ViT(spec.replace(heads=heads, mlp_dim=mlp_dim)).to(ref.device, ref.dtype).train(model.training)
    wider.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}, strict=False)
    pmap = {n: n for n, _ in wider.named_parameters() if not n.startswith("blocks.")}
    hd = spec.head_dim
    q_rows = torch.arange(spec.heads * hd)  # old heads keep their rows within each of q, k and v
    qkv_rows = torch.cat([q_rows + part * heads * hd for part in range(3)])
    mlp_rows = torch.arange(spec.mlp_dim)
    for j, (o, n) in enumerate(zip(model.blocks, wider.blocks)):
        p = f"blocks.{j}."
        for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"):
            n.get_parameter(name).copy_(o.get_parameter(name))
            pmap[p + name] = p + name
        pairs = [(heads * hd * part + spec.heads * hd + 2 * k * hd, hd) for part in range(3)
                 for k in range((heads - spec.heads) // 2)]
        pmap.update(_grow_pair(o.attn.qkv, n.attn.qkv, o.attn.proj, n.attn.proj, qkv_rows, pairs, q_rows,
                               [(spec.heads * hd + 2 * k * hd, hd) for k in range((heads - spec.heads) // 2)],
                               p + "attn.qkv", p + "attn.proj", g))
        pmap.update(_grow_pair(o.mlp.fc1, n.mlp.fc1, o.mlp.fc2, n.mlp.fc2, mlp_rows,
                               [(spec.mlp_dim + 2 * k, 1) for k in range((mlp_dim - spec.mlp_dim) // 2)], mlp_rows,
                               [(spec.mlp_dim + 2 * k, 1) for k in range((mlp_dim - spec.mlp_dim) // 2)],
                               p + "mlp.fc1", p + "mlp.fc2", g))
    return wider, pmap


def _grow_pair(o_in, n_in, o_out, n_out, in_rows, in_pairs, out_cols, out_pairs, in_name, out_name, g) -> dict:
    """A layer pair around new units: the incoming layer's old rows carried and each new pair (first row, size)
    drawn once and repeated; the outgoing layer's old columns carried and each new pair's columns Z and -Z."""
    w_in = torch.randn(n_in.weight.shape, generator=g, dtype=torch.float64) * float(o_in.weight.std())
    b_in = torch.zeros(n_in.bias.shape, dtype=torch.float64)
    w_in[in_rows] = o_in.weight.detach().double().cpu()
    b_in[in_rows] = o_in.bias.detach().double().cpu()
    for first, size in in_pairs:  # both members: the same incoming weights, so the same value
        w_in[first + size: first + 2 * size] = w_in[first: first + size]
    w_out = torch.randn(n_out.weight.shape, generator=g, dtype=torch.float64) * float(o_out.weight.std())
    w_out[:, out_cols] = o_out.weight.detach().double().cpu()
    for first, size in out_pairs:  # readers: Z and -Z, so the pair's equal values cancel
        w_out[:, first + size: first + 2 * size] = -w_out[:, first: first + size]
    n_in.weight.copy_(w_in.to(n_in.weight))
    n_in.bias.copy_(b_in.to(n_in.bias))
    n_out.weight.copy_(w_out.to(n_out.weight))
    n_out.bias.copy_(o_out.bias)
    return {f"{in_name}.weight": (f"{in_name}.weight", _rows_state(in_rows, n_in.weight.shape)),
            f"{in_name}.bias": (f"{in_name}.bias", _rows_state(in_rows, n_in.bias.shape)),
            f"{out_name}.weight": (f"{out_name}.weight", _cols_state(out_cols, n_out.weight.shape)),
            f"{out_name}.bias": f"{out_name}.bias"}


def _rows_state(rows: torch.Tensor, shape):
    def transform(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(shape, dtype=t.dtype, device=t.device)
        out[rows.to(t.device)] = t
        return out
    transform.gather = transform  # old entries keep their value, new ones start at 0
    return transform


def _cols_state(cols: torch.Tensor, shape):
    def transform(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(shape, dtype=t.dtype, device=t.device)
        out[:, cols.to(t.device)] = t
        return out
    transform.gather = transform
    return transform
