"""`--method widen`: the width schedule, growth epochs, learning-rate adaptation, exact resume across a
width growth, and bad inputs refused before any data is read."""

import json

import pytest
import torch

from conftest import cfg, weights
from resgrow.cli import main
from resgrow.errors import ResgrowError
from resgrow.methods import build_method
from resgrow.methods.widen import growth_epochs, width_schedule
from resgrow.models import build
from resgrow.train import Trainer, load_checkpoint


def test_the_default_schedule_widens_by_a_fifth_from_a_quarter_to_the_final_widths():
    widths = width_schedule((64, 128, 256), 0.25, 8, padded=False)
    assert widths[0] == (16, 32, 64) and widths[-1] == (64, 128, 256) and len(widths) == 9
    assert [w[2] for w in widths] == [64, 76, 90, 108, 128, 152, 182, 216, 256]  # x1.19 a growth, even
    assert all(x % 2 == 0 for w in widths for x in w)
    padded = width_schedule((16, 32, 64), 0.25, 4, padded=True)  # a stage grows at least as its input does
    assert all(b[s] - a[s] >= b[s - 1] - a[s - 1] for a, b in zip(padded, padded[1:]) for s in (1, 2))
    with pytest.raises(ResgrowError, match="too narrow for 8 growths"):
        width_schedule((4, 4, 4), 0.25, 8, padded=True)


def test_growth_epochs_follow_stages_a_fifth_longer_each_or_a_fixed_interval():
    assert growth_epochs(160, 8, 8.0, None) == [8, 18, 29, 43, 60, 79, 103, 132]  # stages of 8, 9.6, 11.5, ... epochs
    assert growth_epochs(40, 3, 8.0, 5) == [5, 10, 15]


def _run(data, out, epochs=4, **options):
    torch.manual_seed(0)
    method = build_method("widen", growths=2, start_width=0.5, widen_every=1, **options)
    return Trainer(build("cifar_resnet8", data.num_classes), data, cfg(epochs=epochs), method, out=out)


def test_a_widen_run_reaches_the_final_widths_with_lr_scales_by_the_rule(small, tmp_path):
    trainer = _run(small, tmp_path / "r")
    rows = trainer.fit()
    assert [r["widths"] for r in rows] == ["8-16-32", "12-22-46", "16-32-64", "16-32-64"]
    grows = [e for r in rows for e in r["events"] if e["kind"] == "grow"]
    assert [(e["from"], e["to"]) for e in grows] == [("8-16-32", "12-22-46"), ("12-22-46", "16-32-64")]
    # lr scale of growth t = ||W_t|| / ||W_0|| over conv and linear weights, from the elements' growth ids
    model, ids = trainer.model, trainer.method.groups.ids
    sq = torch.zeros(3, dtype=torch.float64)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            sq.index_add_(0, ids[name].flatten().long(), p.detach().double().flatten() ** 2)
    want = (sq.sqrt() / sq[0].sqrt()).tolist()
    assert rows[-1]["lr_scales"] == pytest.approx(want, rel=1e-5) and len(set(rows[-1]["lr_scales"])) == 3
    assert trainer.slices.scales == pytest.approx(dict(zip(["growth0", "growth1", "growth2"], want)), rel=1e-5)
    # a block's inner channels: 32 from the start, 14 from the first growth, 18 from the second (rows of conv1)
    rows_of = ids["stages.2.blocks.0.conv1.weight"].flatten(1)
    assert (rows_of[46:] == 2).all() and set(rows_of[32:46].unique().tolist()) == {1, 2}
    assert set(rows_of[:32].unique().tolist()) == {0, 1, 2} and (rows_of[:32] == 0).any()


def test_a_run_killed_after_a_width_growth_resumes_to_the_same_weights(small, tmp_path):
    full = _run(small, tmp_path / "full")
    full.fit()
    _run(small, tmp_path / "part").fit(until=2)  # the second epoch ended with a growth
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["spec"]["widths"] == [16, 32, 64]
    resumed = Trainer(build("cifar_resnet8", small.num_classes), small, cfg(epochs=4),
                      build_method("widen", growths=2, start_width=0.5, widen_every=1), out=tmp_path / "part", resume=True)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_without_lr_adaptation_there_are_no_groups_and_the_weight_copies_stay(small, tmp_path):
    trainer = _run(small, tmp_path / "r", lr_adapt=False, widen_init="net2wider")
    rows = trainer.fit()
    assert "lr_scales" not in rows[-1] and trainer.slices.names == [] and rows[-1]["widths"] == "16-32-64"


@pytest.mark.parametrize("args,words", [
    (["--arch", "cifar_resnet8", "--start-width", "0.05"], "too narrow"),
    (["--arch", "cifar_resnet8", "--growths", "3", "--widen-every", "2"], "need a run of at least 7 epochs, not 4"),
    (["--arch", "cifar_resnet8", "--growths", "8"], "8 growths need a run of at least 9 epochs"),
    (["--arch", "cifar_resnet8", "--widen-init", "copy"], "unknown --widen-init 'copy'"),
    (["--arch", "cifar_resnet8", "--start-width", "1.5"], "0 < --start-width < 1"),
    (["--arch", "cifar_resnet8", "--schedule", "step"], "use --schedule cosine"),
    (["--arch", "cifar_resnet8", "--lip-window", "3"], "--lip-window does not apply to method 'widen'"),
])
def test_bad_widen_options_are_one_line_before_any_data_is_read(capsys, tmp_path, args, words):
    rc = main(["train", "--data", str(tmp_path / "no-such-data.zip"), "--out", str(tmp_path / "r"), "--epochs", "4",
               "--method", "widen", "--device", "cpu", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err


def test_widen_from_the_command_line_resumes_with_its_options(capsys, small_zip, tmp_path):
    out = tmp_path / "r"
    base = ["train", "--arch", "cifar_resnet8", "--data", str(small_zip), "--epochs", "3", "--batch-size", "50",
            "--device", "cpu", "--quiet", "--method", "widen", "--growths", "1", "--start-width", "0.5", "--widen-every", "1"]
    assert main([*base, "--out", str(out), "--no-lr-adapt", "--stop-after", "2"]) == 0
    assert main(["train", "--resume", "--out", str(out), "--lr-adapt"]) == 2
    assert "--lr-adapt True (the run's: False)" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["widths"] for r in rows] == ["8-16-32", "16-32-64", "16-32-64"]
    assert main(["compare", str(out)]) == 0
    assert "widened 8-16-32 -> 16-32-64 (epoch 1, growth 1 of 1) @ep1" in capsys.readouterr().out


def test_batch_adaptation_trains_narrow_nets_on_larger_batches_with_the_lr_scaled_alike(small, tmp_path):
    """cifar_resnet8 from a quarter of its widths: about 1/16 of the FLOPs, so 8 times the batch (the cap); at half
    its widths a little over 1/4 (the stem's cost is linear in width), so 2 times; the lr follows the batch
    (linear scaling). A resume after a change keeps the batch."""
    def run(out):
        torch.manual_seed(0)
        method = build_method("widen", growths=2, start_width=0.25, widen_every=1, batch_adapt=True)
        return Trainer(build("cifar_resnet8", small.num_classes), small, cfg(epochs=4, batch_size=25), method, out=out)

    full = run(tmp_path / "full")
    rows = full.fit()
    assert [r["batch_size"] for r in rows] == [200, 50, 25, 25]
    steps = [len(small.train) // b for b in (200, 50, 25, 25)]
    assert [r["lr"] for r in rows] == pytest.approx([8 * full.schedule(1 - 1 / steps[0]), 2 * full.schedule(2 - 1 / steps[1]),
                                                     full.schedule(3 - 1 / steps[2]), full.schedule(4 - 1 / steps[3])])
    run(tmp_path / "part").fit(until=1)
    resumed = Trainer(build("cifar_resnet8", small.num_classes), small, cfg(epochs=4, batch_size=25),
                      build_method("widen", growths=2, start_width=0.25, widen_every=1, batch_adapt=True),
                      out=tmp_path / "part", resume=True)
    assert resumed.fit()[1]["batch_size"] == 50
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ["cifar_resnet8", "preact_resnet8", "wrn10_2", "resnet18", "resnet50"])
def test_every_family_widens_from_the_command_line_to_exactly_its_arch(capsys, small_zip, tmp_path, arch):
    """Stems and inner convs whose widths are not the stages' (wide ResNets, bottlenecks) are aimed at the final
    net too: the run ends at --arch, not at a rounding of it."""
    from resgrow.models.registry import spec_for

    out = tmp_path / arch
    assert main(["train", "--arch", arch, "--data", str(small_zip), "--epochs", "3", "--batch-size", "100", "--device",
                 "cpu", "--quiet", "--method", "widen", "--growths", "2", "--widen-every", "1", "--out", str(out)]) == 0
    spec = load_checkpoint(out / "checkpoint.pt")["spec"]
    want = spec_for(arch).replace(num_classes=10).to_dict()
    assert {k: spec[k] for k in ("widths", "inner_widths", "stem_width")} == \
        {k: want[k] for k in ("widths", "inner_widths", "stem_width")}


def test_a_schedule_aims_every_width_at_the_final_net_and_refuses_one_it_cannot_make():
    from resgrow.methods.widen import spec_schedule
    from resgrow.models import ArchSpec
    from resgrow.models.registry import spec_for

    wrn = spec_for("wrn16_4")  # stem 16, stages 64-128-256
    specs = spec_schedule(wrn, 0.25, 8)
    assert [s.stem_width for s in specs] == [4, 4, 6, 6, 8, 10, 12, 14, 16] and specs[-1] == wrn
    assert specs[0].widths == (16, 32, 64) and all(a.widths <= b.widths for a, b in zip(specs, specs[1:]))
    r50 = spec_schedule(spec_for("resnet50"), 0.25, 8)
    assert r50[0].inner_widths == (16, 32, 64, 128) and r50[-1].inner_widths == (64, 128, 256, 512)
    odd = ArchSpec("basic", (1, 1, 1), (16, 32, 63), stem_width=16)
    with pytest.raises(ResgrowError, match="odd number"):
        spec_schedule(odd, 0.25, 2)
    assert spec_schedule(odd, 0.25, 2, init="net2wider")[-1] == odd


def test_default_stage_lengths_fit_any_run_that_holds_the_growths():
    assert growth_epochs(10, 8, 8.0, None) == [1, 2, 3, 4, 5, 6, 7, 8]  # the scaled t0 would round to epoch 0
    assert growth_epochs(9, 8, 8.0, None) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert growth_epochs(30, 8, 8.0, None) == [2, 3, 5, 8, 11, 15, 19, 25]
    with pytest.raises(ResgrowError, match="need a run of at least 9 epochs"):
        growth_epochs(8, 8, 8.0, None)
    with pytest.raises(ResgrowError, match="need a run of at least 7 epochs, not 6"):
        growth_epochs(6, 3, 8.0, 2)


def test_at_a_growth_every_older_groups_lr_scale_is_recomputed_on_the_grown_net(small, tmp_path):
    trainer = _run(small, tmp_path / "r")  # growths after epochs 1 and 2
    trainer.fit(until=2)
    want = trainer.method.scales(trainer.model)  # the widened net's norms: vt rescaled the old weights
    assert len(want) == 3 and trainer.slices.scales == pytest.approx(dict(zip(["growth0", "growth1", "growth2"], want)),
                                                                    rel=1e-6)
