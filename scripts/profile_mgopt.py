"""Where does an MG/OPT step's time go? Wall-clock per V-cycle, by part, against a plain SGD step of the same net.

Trains one short epoch of `--method mgopt` (each configuration given) and one of the fixed-size baseline on the
same data and device, with the V-cycle's parts timed where the method calls them: the fine SGD steps, the fine
gradient that starts a cycle, the restriction (weights and gradient), the coarse gradient, the coarse SGD
steps, the prolongation of the correction, and the line search (its trial evaluations and the update). On a CPU
every operation is synchronous, so a part's wall-clock is its cost; on a GPU pass --sync to synchronize around
every part (slower, but each part's own). Prints one table per configuration and writes them to --out.

Usage: python scripts/profile_mgopt.py --data .data/cifar10-jpeg-mini.zip [--arch cifar_resnet50]
         [--config "--nu-pre 0 --nu-post 0 --nu-c 1 --line-search best"] ... [--out profile.md]
"""

from __future__ import annotations

import argparse
import collections
import shlex
import sys
import time

import torch

from resgrow.data import load_dataset
from resgrow.methods import build_method, method_class
from resgrow.methods import mgopt as mgopt_module
from resgrow.models import build
from resgrow.train import TrainConfig, Trainer

DEFAULT_CONFIGS = ["", "--nu-pre 0 --nu-post 0 --nu-c 1 --line-search best"]
PARTS = ["fine SGD steps", "fine gradient", "restriction", "coarse gradient", "coarse SGD steps", "prolongation",
         "line search", "rest of the cycle"]


class Clock:
    """Accumulated seconds per part; `sync` waits for the device around each part."""

    def __init__(self, device: torch.device, sync: bool):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self.sync = sync and device.type == "cuda"

    def wrap(self, fn, part):
        def timed(*args, **kwargs):
            if self.sync:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if self.sync:
                torch.cuda.synchronize()
            name = part(*args, **kwargs) if callable(part) else part
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1
            return out
        return timed


def options(text: str) -> dict:
    """A configuration's flags as the method's options: "--nu-c 1 --line-search best" -> {nu_c: 1, ...}."""
    parsers = {o.name: o.type for o in method_class("mgopt").options()}
    words, out = shlex.split(text), {}
    while words:
        name = words.pop(0).removeprefix("--").replace("-", "_")
        if parsers[name] is bool:
            out[name] = True
        else:
            out[name] = parsers[name](words.pop(0))
    return out


def instrument(method, clock: Clock) -> None:
    """Time the V-cycle's parts on this method instance and in the module it calls them from."""
    method._sgd = clock.wrap(method._sgd, lambda levels, opts, level, *a: "fine SGD steps" if level == 0
                             else "coarse SGD steps")
    method._gradient = clock.wrap(method._gradient, lambda model, level, *a: "fine gradient" if level == 0
                                  else "coarse gradient")
    method._take_best = clock.wrap(method._take_best, "line search")
    method._step_length = clock.wrap(method._step_length, "line search")
    method._cycle = clock.wrap(method._cycle, lambda *a: "whole cycle" if a[2] == 0 else "nested cycle")
    for name, part in (("restrict", "restriction"), ("restrict_gradient", "restriction"),
                       ("prolong", "prolongation")):
        setattr(mgopt_module, name, clock.wrap(getattr(mgopt_module, name), part))


def trainer_for(a, data, method_name: str, opts: dict) -> Trainer:
    """One epoch of the table's recipe (batch 128, SGD lr 0.1, wd 5e-4, the device's precision), no run directory."""
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, batch_size=a.batch_size, lr=0.1, weight_decay=5e-4, device=a.device, quiet=True)
    return Trainer(build(a.arch, data.num_classes), data, cfg, build_method(method_name, **opts))


def profile(a, data, text: str) -> str:
    originals = {n: getattr(mgopt_module, n) for n in ("restrict", "restrict_gradient", "prolong")}
    try:
        trainer = trainer_for(a, data, "mgopt", options(text))
        clock = Clock(torch.device(a.device), a.sync)
        instrument(trainer.method, clock)
        row = trainer.fit()[-1]
    finally:
        for n, fn in originals.items():
            setattr(mgopt_module, n, fn)
    base_row = trainer_for(a, data, "baseline", {}).fit()[-1]
    return table(text, row, base_row, dict(clock.seconds), clock.calls["whole cycle"], trainer.method.describe())


def table(text: str, row: dict, base_row: dict, seconds: dict, cycles: int, described: str) -> str:
    """The epoch's time by part: seconds, share, ms per V-cycle and that in plain SGD steps of the baseline."""
    cycle = seconds.get("whole cycle", 0.0)
    inside = sum(seconds.get(p, 0.0) for p in PARTS[1:-1])
    seconds = dict(seconds, **{"rest of the cycle": max(0.0, cycle - inside)})
    steps, total = row["steps"], row["train_seconds"]
    step_ms = 1000 * base_row["train_seconds"] / base_row["steps"]
    lines = [f"### {described}", "", f"flags: `{text or '(the defaults)'}`; {steps} steps ({cycles} with a V-cycle) "
             f"in {total:.2f} s, {1000 * total / steps:.1f} ms a step against {step_ms:.1f} ms for the baseline's "
             f"plain SGD step ({total / steps / (step_ms / 1000):.2f}x); work {row['grad_equivalents']:.1f} "
             f"fine-gradient equivalents ({row['grad_equivalents'] / steps:.2f} a step)", "",
             "| part | seconds | share of the epoch | ms per V-cycle | in plain SGD steps |", "|---|---|---|---|---|"]
    parts = [*PARTS, "outside the parts (data, the trainer)"]
    seconds[parts[-1]] = total - sum(seconds.get(p, 0.0) for p in PARTS)
    for part in parts:
        s = seconds.get(part, 0.0)
        per = 1000 * s / max(1, cycles)
        lines.append(f"| {part} | {s:.2f} | {s / total:.1%} | {per:.1f} | {per / step_ms:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="an ImageFolder zip or folder, or cifar10-sample")
    ap.add_argument("--arch", default="cifar_resnet50")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--config", action="append", help="MG/OPT flags of one configuration (repeatable); default: "
                    "the defaults and the cheapest cycle of the CPU sweep")
    ap.add_argument("--sync", action="store_true", help="on a GPU: synchronize around every part")
    ap.add_argument("--out", help="also write the tables here (markdown)")
    a = ap.parse_args()
    data = load_dataset(a.data)
    from resgrow.train.device import cpu_name

    where = (f"{torch.cuda.get_device_name()}" if a.device.startswith("cuda") else
             f"{cpu_name()}, {torch.get_num_threads()} threads")
    text = (f"`python scripts/profile_mgopt.py {' '.join(map(shlex.quote, sys.argv[1:]))}`\n\n{a.arch}, batch "
            f"{a.batch_size}, one epoch of {len(data.train)} images per row, on {where}, torch {torch.__version__}"
            "\n\n")
    text += "".join(profile(a, data, c) + "\n" for c in (a.config or DEFAULT_CONFIGS))
    print(text, end="")
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
