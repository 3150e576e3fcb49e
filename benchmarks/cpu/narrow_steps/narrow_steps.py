"""Where a narrow net's training step spends its time on this CPU, at every size `--method widen` passes through.

For resnet20 and widen's default schedule (8 growths from 1/4 of the widths): the training step's img/s in every
CPU variant (fp32 / bf16, NCHW / channels_last) at batch 128, and in bf16 at the batch `--batch-adapt` gives that
size; then torch's BatchNorm2d backward alone, channels_last against NCHW, at the widths and resolutions the
schedule meets. Writes narrow_steps.md and narrow_steps.json beside this file.

    python benchmarks/cpu/narrow_steps/narrow_steps.py [--steps 40] [--name narrow_steps]

--name names the two files (another CPU's table beside the first: `--name narrow_steps_epyc`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from resgrow.bench import bench, synthetic_split
from resgrow.measure.flops import flops_per_image
from resgrow.methods.widen import Widen, spec_schedule
from resgrow.models import ResNet
from resgrow.models.registry import spec_for
from resgrow.train.device import channels_last_suits, cpu_bf16_flags, cpu_name

HERE = Path(__file__).parent
CPU = torch.device("cpu")
NCHW, CL = "eager bf16", "eager bf16 channels_last"


def adapted_batch(spec, final, batch: int) -> int:
    w = Widen(batch_adapt=True)
    w.final_flops, w.base_batch = flops_per_image(final, (32, 32)), batch
    return w.batch_for(spec, (32, 32))


def bn_backward_ms(c: int, size: int, channels_last: bool, dtype=torch.bfloat16, reps: int = 10) -> float:
    bn = torch.nn.BatchNorm2d(c)
    x = torch.randn(128, c, size, size, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    g = torch.randn_like(x)
    for _ in range(2):
        bn(x).backward(g)
    t = time.perf_counter()
    for _ in range(reps):
        bn(x).backward(g)
    return 1e3 * (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--name", default="narrow_steps", help="the files' name, without .md and .json")
    a = ap.parse_args()
    final = spec_for("resnet20")
    split = synthetic_split(10_000)
    rows, lines = [], []
    head = (f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, native bf16: "
            f"{', '.join(cpu_bf16_flags()) or 'none'}; resnet20, random images, {a.steps} timed steps per variant")
    lines += [head, "", "| widths | MFLOPs/img | fp32 NCHW | fp32 CL | bf16 NCHW | bf16 CL | train's layout | "
              "adapted batch | bf16, adapted batch, train's layout |", "|---|---|---|---|---|---|---|---|---|"]
    for spec in spec_schedule(final, 0.25, 8):
        timed = bench("resnet20", 128, CPU, split, steps=a.steps, warmup=5, spec=spec)
        res = {r["variant"]: r["img_per_s"] for r in timed}
        layout = CL if channels_last_suits(ResNet(spec), CPU) else NCHW
        batch = adapted_batch(spec, final, 128)
        adapted = bench("resnet20", batch, CPU, split, steps=max(5, a.steps * 128 // batch), warmup=2,
                        variants=[layout], spec=spec)[0]["img_per_s"]
        row = {"widths": spec.widths_str(), "mflops": flops_per_image(spec, (32, 32)) / 1e6, **res,
               "layout": layout, "adapted_batch": batch, "adapted_img_per_s": adapted}
        rows.append(row)
        print(row, flush=True)
        lines.append(f"| {row['widths']} | {row['mflops']:.1f} | " + " | ".join(
            f"{res[v]:,.0f}" for v in ("eager fp32", "eager fp32 channels_last", NCHW, CL))
            + f" | {'channels_last' if layout == CL else 'NCHW'} | {batch} | {adapted:,.0f} |")
    lines += ["", "BatchNorm2d forward + backward alone, batch 128, bf16 (ms):", "",
              "| channels | resolution | channels_last | NCHW |", "|---|---|---|---|"]
    bn = []
    for size, cs in ((32, (4, 6, 8, 12, 14, 16)), (16, (8, 10, 12, 16, 22, 32)), (8, (16, 22, 26, 38, 46, 64))):
        for c in cs:
            cl, nchw = bn_backward_ms(c, size, True), bn_backward_ms(c, size, False)
            bn.append({"channels": c, "size": size, "channels_last_ms": cl, "nchw_ms": nchw})
            lines.append(f"| {c} | {size}x{size} | {cl:.2f} | {nchw:.2f} |")
    record = {"machine": head, "steps": rows, "batch_norm": bn}
    (HERE / f"{a.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (HERE / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
