"""Compile cost of a depth growth with --compile blocks: h as a tensor input vs h as a Python float.

Compiles the blocks of a 2-2-2 net (16-32-64) with inductor, runs one forward + backward, deepens it to
4-4-4 (h halved) and times the first forward + backward of the grown net, once per mode, in one process.
Usage: python scripts/compile_growth.py [--device cpu|cuda]
"""

import argparse
import time

import torch
import torch.nn.functional as F

from resgrow.grow import deepen
from resgrow.models import ArchSpec, ResNet
from resgrow.models.layers import ResidualBlock
from resgrow.train.compile import apply_compile


def step_seconds(model, x, y, sync) -> float:
    t0 = time.perf_counter()
    F.cross_entropy(model(x), y).backward()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    dev = torch.device(p.parse_args().device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    x, y = torch.randn(8, 3, 32, 32, device=dev), torch.arange(8, device=dev)
    tensor_h = ResidualBlock.use_tensor_h
    for mode in ("float h", "tensor h"):
        ResidualBlock.use_tensor_h = tensor_h if mode == "tensor h" else (lambda self: None)
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = ResNet(ArchSpec("basic", (2, 2, 2), (16, 32, 64))).to(dev)
        apply_compile(model, "blocks", "inductor")
        first = step_seconds(model, x, y, sync)
        grown, _ = deepen(model, "interpolate")
        grown = grown.to(dev)
        apply_compile(grown, "blocks", "inductor")
        after = step_seconds(grown, x, y, sync)
        print(f"{mode}: first compile + step {first:.2f} s; after growth to 4-4-4 (h 0.5): {after:.2f} s", flush=True)
    ResidualBlock.use_tensor_h = tensor_h


if __name__ == "__main__":
    main()
