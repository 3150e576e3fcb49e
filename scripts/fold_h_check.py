"""Folded h against unfolded h: the same training steps of a net whose blocks have h = 1/4 (as in a
net grown twice), on one device, from the same seed. Prints the largest difference of any parameter
or buffer after the steps: 0 means bit-identical, as the CPU tests find (and exit code 0; 1 otherwise).
Usage: python scripts/fold_h_check.py [--arch resnet20] [--steps 50] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys

import torch

from resgrow.bench import make_runner, synthetic_split


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--h", type=float, default=0.25)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.backends.cudnn.deterministic = True  # the same kernels in both runs
    split = synthetic_split(4096)
    graph = dev.type == "cuda"
    states = []
    for fold in (False, True):
        runner = make_runner(a.arch, 128, dev, split, amp=True, channels_last=graph, graph=graph, autotune=False,
                             bf16_weights=True, h=a.h, fold_h=fold)
        for i in range(a.steps):
            if i % runner.loader.steps == 0:
                runner.loader.start_epoch(i // runner.loader.steps)
            runner.run()
        loss, acc = runner.read_metrics(a.steps)
        folded = len(runner.bf16_copies.folded)
        print(f"h {a.h:g}, folded {fold}: {folded} blocks folded, mean loss {loss:.6f}, acc {acc:.4f}")
        states.append({k: v.detach().float().cpu().clone() for k, v in runner.model.state_dict().items()})
    diff = max((states[0][k] - states[1][k]).abs().max().item() for k in states[0])
    print(f"{a.arch}, {a.steps} steps on {dev}: largest parameter/buffer difference, folded vs not: {diff:g}")
    return 0 if diff == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
