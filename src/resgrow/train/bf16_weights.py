"""bf16 copies of the conv and linear weights, made by one multi-tensor copy per step.

Under bf16 autocast every conv and linear layer casts its fp32 weight to bf16 in the forward, and
the backward casts the bf16 weight gradient back to fp32: two small kernels per layer (114 of a
resnet56 step's ~600 at the aten level). Inside a CUDA graph, kernel count is what the step time
follows. Here one `_foreach_copy_` writes every bf16 copy before the forward, the model runs on
the copies (`torch.func.functional_call`), and one more `_foreach_copy_` writes their gradients
into the fp32 `.grad` that the optimizer reads. The values are the ones autocast computes (the
same bf16 weights, the same bf16 gradients, rounded to fp32 the same way); the tests check this
bit for bit. BN parameters stay fp32, as under autocast.
"""

from __future__ import annotations

import torch
from torch import nn


class Bf16Weights:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        for mname, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                for pname, p in m.named_parameters(recurse=False):
                    if p.requires_grad and p.dtype == torch.float32:
                        self.names.append(f"{mname}.{pname}" if mname else pname)
                        self.params.append(p)
        ids = {id(p) for p in self.params}
        self.rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        # empty_like keeps each weight's memory format (channels_last), so the copies line up with
        # the fp32 tensors stride for stride, which the fused multi-tensor copy requires.
        self.copies = [torch.empty_like(p, dtype=torch.bfloat16) for p in self.params]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the model on fresh bf16 copies; return the output and the copies (autograd leaves)."""
        with torch.no_grad():
            torch._foreach_copy_(self.copies, self.params)
        leaves = [c.detach().requires_grad_() for c in self.copies]
        out = torch.func.functional_call(self.model, dict(zip(self.names, leaves)), (x,))
        return out, leaves

    def backward(self, loss: torch.Tensor, leaves: list[torch.Tensor]) -> None:
        """Set `.grad` of every trainable fp32 parameter, as `loss.backward()` does after zero_grad(set_to_none)."""
        grads = torch.autograd.grad(loss, leaves + self.rest, allow_unused=True)
        n = len(leaves)
        low = [(p, g) for p, g in zip(self.params, grads[:n]) if g is not None]
        for p, _ in low:
            if p.grad is None:  # fp32 .grad buffers: the cast-back below writes into them in place
                p.grad = torch.empty_like(p)
        if low:
            with torch.no_grad():
                torch._foreach_copy_([p.grad for p, _ in low], [g for _, g in low])
        for p, g in zip(self.rest, grads[n:]):
            if g is not None:
                p.grad = g
