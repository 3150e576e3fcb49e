"""Training throughput of one architecture on this device: eager fp32 vs the trainer's fast path.

Every variant runs the real training step (on-device batch gather, crop + flip, forward, backward,
SGD) over the same data; only the execution mode differs. Timed with a device sync around many
steps after a warm-up; the fast path's capture time is reported separately.
"""

from __future__ import annotations

import time

import torch

from .data.loader import DeviceLoader, channel_stats
from .data.sources import Split
from .errors import ResgrowError, first_line
from .models.custom import build_model
from .models.family import growable_spec
from .models.registry import build
from .models.spec import ArchSpec
from .train.compile import apply_compile
from .train.optim import make_sgd
from .train.step import StepRunner

DEFAULT = "cuda graph bf16 channels_last + bf16 weight copies"  # what `resgrow train` runs on CUDA
# name: (bf16 autocast, channels_last, cuda graph, cudnn.benchmark, bf16 weight copies); the first is the reference
VARIANTS = {
    "eager fp32": (False, False, False, True, False),
    "eager fp32, cudnn.benchmark off": (False, False, False, False, False),
    "eager fp32 channels_last": (False, True, False, True, False),
    "eager bf16": (True, False, False, True, False),
    "eager bf16 channels_last": (True, True, False, True, False),
    "cuda graph fp32": (False, False, True, True, False),
    "cuda graph fp32 channels_last": (False, True, True, True, False),
    "cuda graph bf16": (True, False, True, True, False),
    "cuda graph bf16 channels_last": (True, True, True, True, False),  # --no-bf16-weights
    DEFAULT: (True, True, True, True, True),
}
FP32_DEFAULT = "cuda graph fp32 channels_last"  # what it runs on a GPU without native bf16 (a V100, a T4)
# what it runs on a CPU with native bf16, and without
CPU_DEFAULT, CPU_FP32_DEFAULT = "eager bf16 channels_last", "eager fp32 channels_last"
COMPILED = " + compiled blocks"  # appended to the two fast-path variants with bench(compile_blocks=True)
UNFOLDED = DEFAULT + ", h not folded"  # with bench(h != 1): the add's backward scales each branch's gradient


def synthetic_split(n: int = 10_000, size: int = 32, classes: int = 10, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g),
                 torch.randint(0, classes, (n,), generator=g))


def bench(arch: str, batch_size: int, device: torch.device, split: Split, num_classes: int = 10,
          steps: int = 100, warmup: int = 10, variants=None, compile_blocks: bool = False,
          compile_backend: str = "inductor", h: float = 1.0, spec: ArchSpec | None = None) -> list[dict]:
    """Time each variant; one that fails (e.g. compile on an unsupported setup) is reported, not fatal.
    `h` != 1 sets every block's step size, as in a net grown by depth doubling (1/4 after two); `spec` replaces
    the registry net `arch` (e.g. a narrower one, as width growth passes through)."""
    mean, std = channel_stats(split.images[:5000])
    results = []
    table = dict(VARIANTS)
    if h != 1.0:
        table[UNFOLDED] = VARIANTS[DEFAULT]
    if compile_blocks:
        fast = "cuda graph bf16 channels_last" if device.type == "cuda" else CPU_DEFAULT
        table.update({k + COMPILED: v for k, v in VARIANTS.items() if k.startswith(fast)})
    for name, (amp, cl, graph, autotune, bf16w) in table.items():
        if variants and name not in variants:
            continue
        if device.type != "cuda" and (graph or not autotune):  # no CUDA graphs or cuDNN on a CPU
            continue
        try:
            backend = compile_backend if name.endswith(COMPILED) else None
            r = _time_variant(arch, batch_size, device, split, num_classes, mean, std, steps, warmup, amp, cl, graph,
                              autotune, bf16w, backend, h, name != UNFOLDED, spec)
        except Exception as e:  # noqa: BLE001 - one broken variant must not lose the others' numbers
            r = {"img_per_s": None, "ms_per_step": None, "capture_s": None, "first_step_s": None,
                 "error": f"{type(e).__name__}: {first_line(e)}"}
        results.append({"variant": name, **r})
    ok = [r for r in results if r["img_per_s"]]
    base = ok[0]["img_per_s"] if ok and ok[0] is results[0] else None
    for r in results:
        r["speedup"] = r["img_per_s"] / base if (base and r["img_per_s"]) else None
    return results


def make_runner(arch: str, batch_size: int, device: torch.device, split: Split, num_classes: int = 10, *,
                amp: bool, channels_last: bool, graph: bool, autotune: bool = True, bf16_weights: bool = False,
                compile_backend: str | None = None, mean=None, std=None, h: float = 1.0,
                fold_h: bool = True, spec: ArchSpec | None = None) -> StepRunner:
    """The trainer's training step for one execution mode, on a fresh model (seed 0; `spec`'s net if given), at
    epoch 0."""
    if mean is None:
        mean, std = channel_stats(split.images[:5000])
    torch.backends.cudnn.benchmark = autotune  # the trainer turns it on
    torch.manual_seed(0)
    model = (build(spec) if spec is not None else build_model(arch, num_classes)).to(device)
    if h != 1.0:
        if growable_spec(model) is None:
            raise ResgrowError(f"--h sets the step size of resgrow's residual blocks; {arch} is a "
                               f"{type(model).__name__}, not a resgrow ResNet or ViT")
        for _, _, b in model.iter_blocks():
            b.h = h
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_backend:
        apply_compile(model, "blocks", compile_backend)
    lr = torch.tensor(0.01, device=device) if graph else 0.01
    opt = make_sgd(model, lr, 0.9, 5e-4, False, fused=graph)
    loader = DeviceLoader(split, batch_size, device, mean, std, channels_last=channels_last)
    loader.start_epoch(0)
    return StepRunner(model, opt, loader, amp=amp, graph=graph, bf16_weights=bf16_weights, fold_h=fold_h)


def _time_variant(arch, batch_size, device, split, num_classes, mean, std, steps, warmup, amp, cl, graph, autotune,
                  bf16w, compile_backend, h, fold_h, spec) -> dict:
    runner = make_runner(arch, batch_size, device, split, num_classes, amp=amp, channels_last=cl, graph=graph,
                         autotune=autotune, bf16_weights=bf16w, compile_backend=compile_backend, mean=mean, std=std,
                         h=h, fold_h=fold_h, spec=spec)
    loader = runner.loader
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    runner.run()  # includes the capture (and compilation) for the graph variants
    sync()
    first = time.perf_counter() - t0
    loader.start_epoch(1)
    for _ in range(min(warmup, loader.steps)):
        runner.run()
    sync()
    done, t0 = 0, time.perf_counter()
    while done < steps:
        loader.start_epoch(100 + done)  # start_epoch is cheap and keeps the step index in range
        n = min(steps - done, loader.steps)
        for _ in range(n):
            runner.run()
        done += n
    sync()
    sec = time.perf_counter() - t0
    return {"img_per_s": steps * batch_size / sec, "ms_per_step": 1e3 * sec / steps,
            "capture_s": runner.capture_seconds if graph else None, "first_step_s": first}


def train_default(device: torch.device, model: torch.nn.Module | None = None) -> str:
    """The variant `resgrow train` runs on `device` (device.bf16_autocast decides bf16 or fp32); on a CPU the layout
    depends on `model`'s widths too (device.channels_last_suits)."""
    from .train.device import bf16_autocast, channels_last_suits

    bf16 = bf16_autocast("auto", device, say=False)
    if device.type != "cuda":
        if model is None or channels_last_suits(model, device):
            return CPU_DEFAULT if bf16 else CPU_FP32_DEFAULT
        return "eager bf16" if bf16 else "eager fp32"
    return DEFAULT if bf16 else FP32_DEFAULT


def format_results(arch: str, batch_size: int, device: str, results: list[dict], h: float = 1.0,
                   default: str = DEFAULT) -> str:
    lines = [f"{arch}  batch {batch_size}  on {device}" + (f"  every block's h = {h:g}" if h != 1.0 else ""),
             f"{'variant':<68}{'img/s':>10}{'ms/step':>10}{'speedup':>9}{'capture s':>11}"]
    for r in results:
        if r.get("error"):
            lines.append(f"{r['variant']:<68}  failed: {r['error']}")
            continue
        cap = f"{r['capture_s']:.3f}" if r["capture_s"] is not None else "-"
        speed = f"{r['speedup']:>8.2f}x" if r["speedup"] else f"{'-':>9}"
        lines.append(f"{r['variant']:<68}{r['img_per_s']:>10,.0f}{r['ms_per_step']:>10.2f}{speed}{cap:>11}")
    row = next((r for r in results if r["variant"] == default and r.get("speedup")), None)
    if row:
        capture = f", capture {row['capture_s']:.2f} s" if row["capture_s"] is not None else ""
        where = {DEFAULT: "", FP32_DEFAULT: " on this GPU"}.get(default, f" on this CPU ({default})")
        lines.append(f"resgrow train's default fast path{where}: {row['img_per_s']:,.0f} img/s, {row['speedup']:.2f}x "
                     f"eager fp32{capture}")
    return "\n".join(lines)
