"""LipGrow inside a training loop of your own: resgrow's pieces without resgrow's trainer.

    python examples/own_loop.py --data path/to/cifar10-jpeg.zip --arch resnet74 --epochs 164

The pieces:
- `deepen(model, "duplicate")`: the deeper model and a map from its parameters to the old ones;
- `carry_state(old_model, old_opt, new_model, new_opt, param_map)`: momentum follows the copied weights;
- `LipschitzMeter().score(model)`: the mean Lipschitz bound of the residual blocks; after a growth,
  `meter.follow(param_map)` lets its warm starts follow the copied weights;
- `LipGrowTrigger(grows, epochs)`: LipGrow's rule; `update(epoch, score)` says when to grow.

Everything else (data, augmentation, optimizer, schedule) is ordinary PyTorch that you would
replace by your own. This loop is eager and simple; `resgrow train --method lipgrow` runs the same
method on the fast trainer (CUDA graphs, bf16), with checkpoints and logs.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from resgrow.data import load_dataset
from resgrow.grow import deepen
from resgrow.measure.lipschitz import LipschitzMeter
from resgrow.methods.depth import doublings, parse_blocks
from resgrow.methods.lipgrow import LipGrowTrigger
from resgrow.models import ResNet, build
from resgrow.train import carry_state


def augment(x: torch.Tensor) -> torch.Tensor:
    """Per image: random 32x32 crop of the 4-pixel zero-padded image, and a horizontal flip half the time."""
    n, dev = x.shape[0], x.device
    i, j = (torch.randint(0, 9, (n, 1, 1), device=dev) for _ in range(2))
    rows = i + torch.arange(32, device=dev).view(1, 32, 1)
    cols = j + torch.arange(32, device=dev).view(1, 1, 32)
    cols = torch.where(torch.rand(n, 1, 1, device=dev) < 0.5, 2 * j + 31 - cols, cols)  # mirrored crop
    padded = F.pad(x, (4, 4, 4, 4))
    return padded[torch.arange(n, device=dev).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)  # N x 3 x 32 x 32


def sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


def main(argv=None) -> torch.nn.Module:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--arch", default="resnet74", help="the final architecture")
    p.add_argument("--start-blocks", default="3-3-3")
    p.add_argument("--epochs", type=int, default=164)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--reserve", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    dev = torch.device(a.device)

    data = load_dataset(a.data)
    x_train = data.train.images.permute(0, 3, 1, 2).float().div(255).to(dev)  # N x 3 x 32 x 32
    mean, std = x_train.mean((0, 2, 3), keepdim=True), x_train.std((0, 2, 3), keepdim=True)
    x_train, y_train = (x_train - mean) / std, data.train.labels.to(dev)
    x_test = ((data.test.images.permute(0, 3, 1, 2).float().div(255).to(dev)) - mean) / std
    y_test = data.test.labels.to(dev)

    final = build(a.arch, data.num_classes).spec
    start = parse_blocks(a.start_blocks)
    model = ResNet(final.replace(blocks=start)).to(dev)
    opt = sgd(model, a.lr)
    trigger = LipGrowTrigger(grows=doublings(start, final.blocks), epochs=a.epochs, window=a.window, reserve=a.reserve)
    meter = LipschitzMeter(image_size=32)
    steps = len(x_train) // a.batch_size
    cycle_start = 0  # LipGrow's adaptive cosine: restart at the peak lr at every grow, anneal to the end

    for epoch in range(a.epochs):
        model.train()
        order = torch.randperm(len(x_train), device=dev)
        for i in range(steps):
            t = (epoch + i / steps - cycle_start) / (a.epochs - cycle_start)
            for g in opt.param_groups:
                g["lr"] = 0.5 * a.lr * (1 + math.cos(math.pi * t))
            idx = order[i * a.batch_size:(i + 1) * a.batch_size]
            loss = F.cross_entropy(model(augment(x_train[idx])), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        model.eval()
        with torch.no_grad():
            acc = sum((model(x_test[k:k + 1000]).argmax(1) == y_test[k:k + 1000]).sum().item()
                      for k in range(0, len(x_test), 1000)) / len(x_test)
        grow, why, ratio = trigger.update(epoch + 1, meter.score(model))
        print(f"epoch {epoch + 1}: {model.spec.blocks_str()}, test acc {acc:.2%}, Lipschitz ratio "
              f"{'-' if ratio is None else f'{ratio:.3f}'}", flush=True)
        if grow and epoch + 1 < a.epochs:
            deeper, param_map = deepen(model, "duplicate")
            deeper = deeper.to(dev)
            new_opt = sgd(deeper, a.lr)
            carry_state(model, opt, deeper, new_opt, param_map)
            meter.follow(param_map)  # the power iterations' warm starts follow the copied weights too
            print(f"  grew {model.spec.blocks_str()} -> {deeper.spec.blocks_str()} ({why})", flush=True)
            model, opt, cycle_start = deeper, new_opt, epoch + 1
    return model


if __name__ == "__main__":
    main()
