"""Cost of one LipGrow score (LipschitzMeter.score) on a fixed model: seconds per warm call and
aten ops per call, and the score itself (to check that a change keeps it).

    python scripts/meter_cost.py [--arch resnet74] [--device cpu|cuda]
"""

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

from resgrow.measure.lipschitz import LipschitzMeter
from resgrow.models import build

p = argparse.ArgumentParser()
p.add_argument("--arch", default="resnet74")
p.add_argument("--device", default="cpu")
a = p.parse_args()
torch.manual_seed(0)
model = build(a.arch).to(a.device).eval()
meter = LipschitzMeter()
meter.score(model)  # the cold start
sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
sync()
t0 = time.perf_counter()
for _ in range(5):
    score = meter.score(model)
sync()
seconds = (time.perf_counter() - t0) / 5
with profile(activities=[ProfilerActivity.CPU]) as prof:
    meter.score(model)
ops = collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None)
views = sum(ops[k] for k in ("aten::to", "aten::detach", "aten::reshape", "aten::split", "aten::view"))
print(f"{a.arch} on {a.device}: score {score:.7f} after 6 calls, {seconds:.3f} s per warm call, {sum(ops.values())} "
      f"top-level aten ops per call ({sum(ops.values()) - views} without no-op casts and views)")
