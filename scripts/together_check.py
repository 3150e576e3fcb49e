"""Does `resgrow together` pay on this device, and do runs trained together train as they would alone?

1. Speed: ARCH trained alone for EPOCHS, then RUNS copies of it together (cuDNN autotuning on, as in
   real runs). The steady epoch (the last one) alone against together gives the work per second.
2. Sameness: two small runs with --deterministic, alone and then together: their final weights must
   be equal bit for bit (on CPU the tests check this; here it is checked with the GPU's streams).

    python scripts/together_check.py --data .data/cifar10-jpeg.zip --device cuda --json together_check.json

Speed comes first: --deterministic sets process-wide flags that stay set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

# --deterministic's fixed cuBLAS workspace takes effect only if set before cuBLAS starts (the speed check
# starts it); without it cuBLAS may differ between streams, which is the very thing checked here.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

from resgrow.data import load_dataset  # noqa: E402
from resgrow.models import build  # noqa: E402
from resgrow.train import TrainConfig, Trainer, fit_together  # noqa: E402


def trainers(data, arch, seeds, epochs, device, root, **cfg):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        c = TrainConfig(epochs=epochs, batch_size=128, lr=0.1, device=device, seed=s, quiet=True, **cfg)
        out.append(Trainer(build(arch, data.num_classes), data, c, out=Path(root) / f"{arch}_s{s}"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", default="resnet74", help="the net timed alone and together (default resnet74)")
    ap.add_argument("--small", default="resnet20", help="the net of the sameness check (default resnet20)")
    ap.add_argument("--runs", type=int, default=2, help="runs trained together in the speed check")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    data = load_dataset(a.data)
    root = tempfile.mkdtemp(prefix="together_check_")
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() and a.device != "cpu" else "cpu",
              "torch": torch.__version__, "arch": a.arch, "runs": a.runs, "epochs": a.epochs}

    alone = trainers(data, a.arch, [0], a.epochs, a.device, f"{root}/alone")[0]
    alone.fit()
    together = trainers(data, a.arch, range(a.runs), a.epochs, a.device, f"{root}/together")
    rows = fit_together(together)
    failed = [str(r) for r in rows if isinstance(r, BaseException)]
    if failed:
        print(f"together failed: {failed}", file=sys.stderr)
        return 1
    t_alone = alone.history[-1]["epoch_seconds"]
    t_together = max(t.history[-1]["epoch_seconds"] for t in together)
    result["speed"] = {"epoch_seconds_alone": t_alone,
                       "epoch_seconds_together": [t.history[-1]["epoch_seconds"] for t in together],
                       "work_per_second_vs_alone": round(a.runs * t_alone / t_together, 3)}
    print(f"{a.arch}: last epoch alone {t_alone:.3f} s; {a.runs} together {t_together:.3f} s each: "
          f"{a.runs * t_alone / t_together:.2f}x the work per second")

    seeds = (0, 1)
    solo = trainers(data, a.small, seeds, 2, a.device, f"{root}/solo", deterministic=True)
    for t in solo:
        t.fit()
    pair = trainers(data, a.small, seeds, 2, a.device, f"{root}/pair", deterministic=True)
    rows = fit_together(pair)
    same = []
    for s, x, y, r in zip(seeds, solo, pair, rows):
        if isinstance(r, BaseException):
            print(f"{a.small} seed {s}: together failed: {r}", file=sys.stderr)
            return 1
        wx, wy = x.model.state_dict(), y.model.state_dict()
        diff = max((wx[k].float() - wy[k].float()).abs().max().item() for k in wx)
        same.append(diff == 0)
        print(f"{a.small} seed {s}, --deterministic: together {'equals' if diff == 0 else 'differs from'} alone "
              f"(largest weight difference {diff:.3g}; test acc {x.history[-1]['test_acc']:.4f} alone, "
              f"{y.history[-1]['test_acc']:.4f} together)")
    result["same_as_alone"] = same
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
