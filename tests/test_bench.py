import torch

import resgrow.bench as bench_mod
from resgrow.bench import bench, format_results, synthetic_split
from resgrow.grow.width import wider_spec
from resgrow.models.registry import spec_for

CPU_VARIANTS = ["eager fp32", "eager fp32 channels_last", "eager bf16", "eager bf16 channels_last"]


def test_bench_times_every_cpu_variant_side_by_side():
    res = bench("cifar_resnet8", 16, torch.device("cpu"), synthetic_split(64), steps=2, warmup=1)
    assert [r["variant"] for r in res] == CPU_VARIANTS  # the CUDA-graph variants need CUDA
    assert all(r["img_per_s"] > 0 for r in res) and res[0]["speedup"] == 1.0
    assert res[1]["speedup"] == res[1]["img_per_s"] / res[0]["img_per_s"]


def test_the_cpu_default_is_bf16_channels_last_where_the_cpu_has_native_bf16(monkeypatch):
    from resgrow.train import device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda cpuinfo=None: ["amx_bf16"])
    assert bench_mod.train_default(cpu) == bench_mod.CPU_DEFAULT == "eager bf16 channels_last"
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda cpuinfo=None: [])
    assert bench_mod.train_default(cpu) == bench_mod.CPU_FP32_DEFAULT == "eager fp32 channels_last"
    # a net whose widths the CPU's channels_last batch norm is slow at trains NCHW where AMX runs the convolutions,
    # channels_last elsewhere (device.channels_last_suits)
    full = bench_mod.build("cifar_resnet8")  # 16-32-64
    narrow = bench_mod.build(wider_spec(full.spec, (8, 16, 32)))
    assert bench_mod.train_default(cpu, full) == bench_mod.train_default(cpu, narrow) == "eager fp32 channels_last"
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda cpuinfo=None: ["amx_bf16"])
    assert bench_mod.train_default(cpu, full) == "eager bf16 channels_last"
    assert bench_mod.train_default(cpu, narrow) == "eager bf16"
    rows = [{"variant": "eager fp32", "img_per_s": 800.0, "ms_per_step": 160.0, "capture_s": None, "speedup": 1.0},
            {"variant": bench_mod.CPU_DEFAULT, "img_per_s": 1700.0, "ms_per_step": 75.3, "capture_s": None, "speedup": 2.125}]
    last = format_results("resnet20", 128, "cpu", rows, default=bench_mod.CPU_DEFAULT).splitlines()[-1]
    assert last == "resgrow train's default fast path on this CPU (eager bf16 channels_last): 1,700 img/s, 2.12x eager fp32"


def test_a_failing_variant_is_reported_not_fatal(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no kernel image is available\nmore detail")

    monkeypatch.setattr(bench_mod, "build_model", broken)
    res = bench("resnet20", 16, torch.device("cpu"), synthetic_split(64), steps=2, warmup=1)
    assert res[0]["error"] == "RuntimeError: no kernel image is available" and res[0]["speedup"] is None
    assert "failed: RuntimeError: no kernel image is available" in format_results("resnet20", 16, "cpu", res)


def test_the_default_fast_path_is_named_with_its_speedup():
    rows = [{"variant": "eager fp32", "img_per_s": 5000.0, "ms_per_step": 25.6, "capture_s": None, "speedup": 1.0},
            {"variant": bench_mod.DEFAULT, "img_per_s": 24000.0, "ms_per_step": 5.3, "capture_s": 0.14, "speedup": 4.8}]
    from resgrow.train import TrainConfig

    cfg = TrainConfig()  # the bench's "default" must be what the trainer does
    assert bench_mod.VARIANTS[bench_mod.DEFAULT] == (cfg.amp, cfg.channels_last, cfg.graphs, True, cfg.bf16_weights)
    last = format_results("resnet56", 128, "gpu", rows).splitlines()[-1]
    assert last == "resgrow train's default fast path: 24,000 img/s, 4.80x eager fp32, capture 0.14 s"
    assert "default fast path" not in format_results("resnet56", 128, "cpu", rows[:1])
    # a GPU without native bf16 (a T4) trains in fp32: its default is the fp32 graph
    rows.append({"variant": bench_mod.FP32_DEFAULT, "img_per_s": 9000.0, "ms_per_step": 14.2, "capture_s": 0.2, "speedup": 1.8})
    last = format_results("resnet56", 128, "T4", rows, default=bench_mod.FP32_DEFAULT).splitlines()[-1]
    assert last == "resgrow train's default fast path on this GPU: 9,000 img/s, 1.80x eager fp32, capture 0.20 s"
    assert bench_mod.VARIANTS[bench_mod.FP32_DEFAULT] == (False, cfg.channels_last, cfg.graphs, True, False)


def test_bench_h_builds_a_grown_nets_step_folded_or_not():
    """--h 0.25: every block as in resnet20 grown twice; the default step folds h, the extra variant does not."""
    split = synthetic_split(64)
    for fold, folded in ((True, 9), (False, 0)):
        runner = bench_mod.make_runner("resnet20", 16, torch.device("cpu"), split, amp=True, channels_last=False,
                                       graph=False, bf16_weights=True, h=0.25, fold_h=fold)
        assert {b.h for _, _, b in runner.model.iter_blocks()} == {0.25}
        assert len(runner.bf16_copies.folded) == folded
        runner.run()  # the bf16 autocast step runs eagerly on CPU
    res = bench("cifar_resnet8", 16, torch.device("cpu"), split, steps=2, warmup=1, h=0.25)
    assert [r["variant"] for r in res] == CPU_VARIANTS  # the CUDA-graph variants, folded or not, need CUDA
    assert "every block's h = 0.25" in format_results("resnet20", 16, "cpu", res, 0.25).splitlines()[0]


def test_the_default_follows_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "some GPU")
    for capability, default in (((9, 0), bench_mod.DEFAULT), ((7, 5), bench_mod.FP32_DEFAULT)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert bench_mod.train_default(torch.device("cuda")) == default


def test_bench_times_a_narrower_net_when_given_its_widths():
    spec = wider_spec(spec_for("resnet20"), (4, 8, 16))
    runner = bench_mod.make_runner("resnet20", 16, torch.device("cpu"), synthetic_split(64), amp=False,
                                   channels_last=False, graph=False, spec=spec)
    assert runner.model.spec == spec and runner.model.spec.stem_width == 4
    wide = bench("resnet20", 16, torch.device("cpu"), synthetic_split(64), steps=1, warmup=0, variants=["eager fp32"])
    narrow = bench("resnet20", 16, torch.device("cpu"), synthetic_split(64), steps=1, warmup=0, variants=["eager fp32"],
                   spec=spec)
    assert len(wide) == len(narrow) == 1 and narrow[0]["img_per_s"] > 0 and wide[0]["img_per_s"] > 0
