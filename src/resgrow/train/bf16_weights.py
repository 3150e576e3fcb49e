"""bf16 copies of the conv and linear weights, made by one multi-tensor copy per step; h folded in.

Under bf16 autocast every conv and linear layer casts its fp32 weight to bf16 in the forward, and
the backward casts the bf16 weight gradient back to fp32: two small kernels per layer (114 of a
resnet56 step's ~600 at the aten level). Inside a CUDA graph, kernel count is what the step time
follows. Here one `_foreach_copy_` writes every bf16 copy before the forward, the model runs on
the copies (`torch.func.functional_call`), and one more `_foreach_copy_` writes their gradients
into the fp32 `.grad` that the optimizer reads. The values are the ones autocast computes (the
same bf16 weights, the same bf16 gradients, rounded to fp32 the same way); the tests check this
bit for bit. BN parameters stay fp32, as under autocast.

Folded h: a block with step size h != 1 computes shortcut + h * branch with one add, but the add's
backward multiplies the branch's gradient by h: one elementwise kernel over the block's activations
per block and step, which made a grown resnet74 1.5-2% slower per epoch than the same net built at
full depth (BENCHMARKS.md). The branch is linear in the parameters it ends in (`branch_end`: its last
BN's affine, or its last conv), so the step instead runs the block with h * those parameters and a
plain add, and multiplies their gradients by h: two multi-tensor kernels for the whole net. The
optimizer, weight decay and checkpoints still see the unscaled parameters. For the h that depth
growth makes (1/2, 1/4, ...) every product is exact, and the tests check the step bit for bit
against the unfolded one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.layers import ResidualBlock


def _trainable_fp32(p: torch.Tensor) -> bool:
    return p.requires_grad and p.dtype == torch.float32


def foldable_blocks(model: nn.Module) -> list[tuple[str, ResidualBlock]]:
    """(name, block) of the blocks whose h the step can fold: h != 1 as a float (compiled blocks read it
    from a tensor and fuse the scaling anyway), and trainable fp32 parameters to fold it into."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, ResidualBlock) and m.h != 1.0 and m.h_tensor is None and m.branch_end:
            params = dict(m.named_parameters())
            if all(n in params and _trainable_fp32(params[n]) for n in m.branch_end):
                out.append((name, m))
    return out


class Bf16Weights:
    def __init__(self, model: nn.Module, fold_h: bool = True) -> None:
        self.model = model
        self.folded = foldable_blocks(model) if fold_h else []
        scale = {f"{b}.{n}" if b else n: m.h for b, m in self.folded for n in m.branch_end}
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        for mname, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                for pname, p in m.named_parameters(recurse=False):
                    if _trainable_fp32(p):
                        self.names.append(f"{mname}.{pname}" if mname else pname)
                        self.params.append(p)
        # empty_like keeps each weight's memory format (channels_last), so the copies line up with
        # the fp32 tensors stride for stride, which the fused multi-tensor copy requires.
        self.copies = [torch.empty_like(p, dtype=torch.bfloat16) for p in self.params]
        # h goes into some bf16 copies (a pre-activation block's last conv) and into fp32 scaled
        # parameters (BN affines), which are leaves after the copies: the leaves are copies + fp32_scaled.
        low = [i for i, n in enumerate(self.names) if n in scale]
        self.low_scaled, self.low_h = [self.copies[i] for i in low], [scale[self.names[i]] for i in low]
        named = dict(model.named_parameters())
        in_copies = set(self.names)
        fp32_names = [n for n in scale if n not in in_copies]
        self.fp32_scaled, self.fp32_h = [named[n] for n in fp32_names], [scale[n] for n in fp32_names]
        self.leaf_names = self.names + fp32_names
        self.scaled_at = low + [len(self.names) + j for j in range(len(fp32_names))]  # leaf index -> its h
        self.scaled_h = self.low_h + self.fp32_h
        ids = {id(p) for p in self.params + self.fp32_scaled}
        self.rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        self.direct = self.fp32_scaled + self.rest  # their fp32 gradient is the autograd result itself

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the model on fresh bf16 copies (h folded in); return the output and the leaves to differentiate."""
        with torch.no_grad():
            torch._foreach_copy_(self.copies, self.params)
            if self.low_scaled:
                torch._foreach_mul_(self.low_scaled, self.low_h)
            scaled = torch._foreach_mul(self.fp32_scaled, self.fp32_h) if self.fp32_scaled else []
        leaves = [c.detach().requires_grad_() for c in self.copies] + [s.requires_grad_() for s in scaled]
        swap = dict(zip(self.leaf_names, leaves))
        for _, b in self.folded:
            b.h_folded = True
        try:
            out = torch.func.functional_call(self.model, swap, (x,))
        finally:
            for _, b in self.folded:
                b.h_folded = False
        return out, leaves

    def backward(self, loss: torch.Tensor, leaves: list[torch.Tensor]) -> None:
        """Set `.grad` of every trainable fp32 parameter, as `loss.backward()` does after zero_grad(set_to_none)."""
        grads = torch.autograd.grad(loss, leaves + self.rest, allow_unused=True)
        n = len(self.params)
        pairs = [(grads[i], h) for i, h in zip(self.scaled_at, self.scaled_h) if grads[i] is not None]
        if pairs:  # d loss / d p = h * d loss / d (h p)
            with torch.no_grad():
                torch._foreach_mul_([g for g, _ in pairs], [h for _, h in pairs])
        low = [(p, g) for p, g in zip(self.params, grads[:n]) if g is not None]
        for p, _ in low:
            if p.grad is None:  # fp32 .grad buffers: the cast-back below writes into them in place
                p.grad = torch.empty_like(p)
        if low:
            with torch.no_grad():
                torch._foreach_copy_([p.grad for p, _ in low], [g for _, g in low])
        for p, g in zip(self.direct, grads[n:]):
            if g is not None:
                p.grad = g
