import torch

import resgrow.bench as bench_mod
from resgrow.bench import bench, format_results, synthetic_split


def test_bench_times_eager_on_cpu():
    res = bench("resnet20", 16, torch.device("cpu"), synthetic_split(64), steps=2, warmup=1)
    assert [r["variant"] for r in res] == ["eager fp32"]  # the others need CUDA
    assert res[0]["img_per_s"] > 0 and res[0]["speedup"] == 1.0


def test_a_failing_variant_is_reported_not_fatal(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no kernel image is available\nmore detail")

    monkeypatch.setattr(bench_mod, "build_model", broken)
    res = bench("resnet20", 16, torch.device("cpu"), synthetic_split(64), steps=2, warmup=1)
    assert res[0]["error"] == "RuntimeError: no kernel image is available" and res[0]["speedup"] is None
    assert "failed: RuntimeError: no kernel image is available" in format_results("resnet20", 16, "cpu", res)
