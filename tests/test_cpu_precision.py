"""The CPU's fast path: bf16 autocast and channels_last where the CPU computes bf16 natively (AVX-512 BF16 or
AMX), fp32 elsewhere, decided by a probe of the CPU's flags; --precision forces it; the run says which in its
first line and run.json; a run keeps the precision it started with, also one started before the CPU had a
fast path. The tests fake the probe, so they hold on any CPU; bf16 where it is emulated is only slower."""

import json

import pytest
import torch

from conftest import cfg, tiny, weights
from resgrow.cli import main
from resgrow.errors import ResgrowError
from resgrow.train import Trainer, device

AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SPR = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
OLD = "flags\t\t: fpu sse sse2 avx avx2 fma\n"
CPU = torch.device("cpu")


@pytest.fixture
def native(monkeypatch):
    """Make the probe see a CPU with (True) or without (False) native bf16."""
    def set_native(yes: bool):
        monkeypatch.setattr(device, "cpu_bf16_flags", lambda cpuinfo=None: ["amx_bf16"] if yes else [])
    return set_native


def test_the_probe_reads_native_bf16_from_the_cpu_flags():
    assert device.cpu_bf16_flags(AMD) == ["avx512_bf16"]
    assert device.cpu_bf16_flags(SPR) == ["avx512_bf16", "amx_bf16"]
    assert device.cpu_bf16_flags(OLD) == [] and device.cpu_bf16_flags("") == []
    assert isinstance(device.cpu_bf16_flags(), list)  # this machine's, whatever it has


def test_auto_trains_bf16_only_where_the_cpu_has_it_and_the_precision_flag_forces_either(native, capsys):
    native(True)
    assert device.bf16_autocast("auto", CPU) and not device.bf16_autocast("fp32", CPU)
    native(False)
    assert not device.bf16_autocast("auto", CPU) and capsys.readouterr().err == ""
    assert device.bf16_autocast("bf16", CPU)
    assert "no native bf16: --precision bf16 runs emulated" in capsys.readouterr().err
    with pytest.raises(ResgrowError, match="unknown precision 'fp16'"):
        device.bf16_autocast("fp16", CPU)


def test_a_cpu_run_with_native_bf16_trains_in_bf16_channels_last_and_says_so(native, small, tmp_path):
    native(True)
    trainer = Trainer(tiny(), small, cfg(epochs=1, precision="auto"), out=tmp_path / "r")
    trainer.fit()
    assert trainer.amp and trainer.channels_last and trainer.runner.amp
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["precision"] == "bf16 (native bf16: amx_bf16 on the CPU)" and run["fast_path"]["amp_bf16"]
    assert run["cpu"] and run["threads"] == torch.get_num_threads()
    native(False)
    fp32 = Trainer(tiny(), small, cfg(epochs=1, precision="auto"))
    assert not fp32.amp and fp32.channels_last


def test_a_bf16_run_resumes_bit_for_bit(small, tmp_path):
    full = Trainer(tiny(), small, cfg(precision="bf16"), out=tmp_path / "full")
    full.fit()
    Trainer(tiny(), small, cfg(precision="bf16"), out=tmp_path / "part").fit(until=2)
    resumed = Trainer(tiny(seed=5), small, cfg(precision="bf16"), out=tmp_path / "part", resume=True)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert resumed.amp and all(torch.equal(a[k], b[k]) for k in a)


def test_the_command_line_takes_precision_and_refuses_bf16_with_no_amp(capsys, small_zip, tmp_path):
    base = ["train", "--arch", "cifar_resnet8", "--data", str(small_zip), "--epochs", "1", "--batch-size", "100",
            "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "a"), "--precision", "fp32"]) == 0
    assert "precision fp32 (" in capsys.readouterr().err
    assert json.loads((tmp_path / "a" / "run.json").read_text())["config"]["precision"] == "fp32"
    assert main([*base, "--out", str(tmp_path / "b"), "--precision", "bf16", "--no-amp"]) == 2
    assert "bf16 (--precision bf16) and fp32 (--no-amp) both asked for" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "a"), "--precision", "bf16"]) == 2
    assert "--precision bf16 (the run's: fp32)" in capsys.readouterr().err


def test_a_run_keeps_the_precision_it_started_with_on_a_machine_that_would_choose_another(native, small, tmp_path):
    native(True)  # started where the CPU has native bf16
    Trainer(tiny(), small, cfg(epochs=2, precision="auto"), out=tmp_path / "r").fit(until=1)
    native(False)  # resumed where it has none: "auto" would pick fp32
    resumed = Trainer(tiny(), small, cfg(epochs=2, precision="auto"), out=tmp_path / "r", resume=True)
    resumed.fit()
    assert resumed.amp and resumed.runner.amp


def _laid_out_channels_last(trainer) -> bool:
    convs = [m.weight for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    cl = {w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs}
    assert len(cl) == 1 and trainer.loader.normalize.channels_last == trainer.loaders.test.normalize.channels_last
    assert trainer.loader.normalize.channels_last == trainer.layout_channels_last == cl.pop()
    return trainer.layout_channels_last


def test_on_a_cpu_with_amx_channels_last_is_used_only_at_widths_its_batch_norm_backward_is_fast_at(small, native):
    """torch's channels_last BatchNorm backward on a CPU is slow where the width is not a multiple of the vector
    width; where AMX runs the convolutions, a net trains NCHW there, and its inputs follow; a growth to such widths
    switches the layout."""
    from resgrow.methods.widen import Widen
    from resgrow.models import ArchSpec, ResNet

    native(True)  # AMX
    assert not device.channels_last_suits(tiny(), CPU)  # 8-16-32
    assert device.channels_last_suits(tiny(), torch.device("cuda"))  # a GPU: always
    final = ArchSpec("basic", (1, 1, 1), (16, 32, 64), stem_width=16)
    widen, seen = Widen(start_width=0.5, growths=1, widen_every=1), []
    trainer = Trainer(ResNet(final), small, cfg(epochs=2), method=widen)
    grow = widen.on_epoch_end
    widen.on_epoch_end = lambda ctx: seen.append((trainer.model.spec.widths, _laid_out_channels_last(trainer),
                                                  trainer.layout_note)) or grow(ctx)
    trainer.fit()
    assert [s[:2] for s in seen] == [((8, 16, 32), False), ((16, 32, 64), True)]
    assert seen[0][2].endswith("(now NCHW)") and seen[1][2].endswith("(now channels_last)")
    assert not _laid_out_channels_last(Trainer(ResNet(final), small, cfg(epochs=1, channels_last=False)))


@pytest.mark.parametrize("flags", [["avx512_bf16"], []])
def test_on_a_cpu_without_amx_every_width_trains_channels_last(small, monkeypatch, flags):
    """Without AMX, NCHW's convolutions cost more than channels_last's slow batch norm: a narrow net stays
    channels_last, and the run says one layout."""
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda cpuinfo=None: flags)
    assert device.channels_last_suits(tiny(), CPU)  # 8-16-32
    trainer = Trainer(tiny(), small, cfg(epochs=1))
    assert _laid_out_channels_last(trainer) and trainer.layout_note == "channels_last"


def test_resgrow_eval_lays_a_net_out_as_its_training_did(small, native):
    """A run that asked for channels_last evaluates NCHW on a CPU where its widths would make it slow."""
    from resgrow.train.saved import evaluate_model

    native(True)  # AMX
    narrow = tiny()  # 8-16-32
    evaluate_model(narrow, small, channels_last=True)
    assert all(m.weight.is_contiguous() for m in narrow.modules() if isinstance(m, torch.nn.Conv2d))
