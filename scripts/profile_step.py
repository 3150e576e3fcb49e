"""Where does a training step's GPU time go? Kernel count and kernel time per step, by kernel name.

Profiles the trainer's step (eager, so every kernel is launched and timed on its own) and the
captured CUDA graph replay, then prints: kernels per step, the sum of kernel durations (the floor
for a graph replay that only removes launch gaps), the measured replay time, and the kernels that
take the most time. If the replay is close to the kernel-time sum, only fewer or faster kernels
help (fusion); if it is far above it, gaps between kernels remain.
Usage: python scripts/profile_step.py [--arch resnet56] [--batch-size 128] [--bf16-weights] [--compile]
"""

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

from resgrow.bench import make_runner, synthetic_split


def kernels(prof) -> list:
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def runner_for(a, graph: bool):
    split = synthetic_split(50_000)  # 390 steps at batch 128: no epoch restart needed
    return make_runner(a.arch, a.batch_size, torch.device("cuda"), split, amp=True, channels_last=True, graph=graph,
                       bf16_weights=a.bf16_weights, compile_backend="inductor" if a.compile else None)


def profile_steps(r, n: int):
    for _ in range(5):
        r.run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            r.run()
        torch.cuda.synchronize()
    return kernels(prof)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet56")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--bf16-weights", action="store_true")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    n = a.steps
    print(f"{a.arch} batch {a.batch_size}, bf16 channels_last, bf16_weights={a.bf16_weights}, compiled "
          f"blocks={a.compile}")

    eager = profile_steps(runner_for(a, graph=False), n)
    by_name = collections.defaultdict(lambda: [0, 0.0])
    for e in eager:
        by_name[e.name][0] += 1
        by_name[e.name][1] += e.time_range.elapsed_us()
    total_us = sum(v[1] for v in by_name.values())
    print(f"eager step: {len(eager) / n:.0f} kernels, {total_us / n / 1e3:.3f} ms of kernel time per step")
    print(f"{'kernels/step':>12} {'us/step':>9} {'share':>6}  name")
    for name, (cnt, us) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:20]:
        print(f"{cnt / n:>12.0f} {us / n:>9.1f} {us / total_us:>6.1%}  {name[:110]}")

    g = runner_for(a, graph=True)
    for _ in range(20):
        g.run()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(200):
        g.run()
    torch.cuda.synchronize()
    replay_ms = (time.perf_counter() - t0) / 200 * 1e3
    graph_k = profile_steps(g, n)
    k_us = sum(e.time_range.elapsed_us() for e in graph_k)
    print(f"graph replay: {replay_ms:.3f} ms/step measured; profiler saw {len(graph_k) / n:.0f} kernels per replay, "
          f"{k_us / n / 1e3:.3f} ms of kernel time per step")


if __name__ == "__main__":
    main()
