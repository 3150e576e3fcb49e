"""`--method compound`: the stages of depth and width, growth at fixed epochs or by LipGrow's rule, lr groups through
depth copies, every family through the command line, and bad options refused before any data is read."""

import json

import pytest
import torch

from conftest import cfg
from resgrow.cli import main
from resgrow.errors import ResgrowError
from resgrow.methods import build_method
from resgrow.methods.compound import compound_plan, interleave
from resgrow.models import ArchSpec, ResNet
from resgrow.models.registry import spec_for
from resgrow.train import Trainer, load_checkpoint

R14 = ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8)


def _stages(specs):
    return [(s.blocks_str(), s.widths_str()) for s in specs]


def test_together_takes_a_step_of_both_and_alternate_deepens_first():
    assert interleave(1, 1, "together") == [(0, 0), (1, 1)]
    assert interleave(2, 1, "together") == [(0, 0), (1, 0), (2, 1)]  # the shorter path steps at the last growths
    assert interleave(1, 1, "alternate") == [(0, 0), (1, 0), (1, 1)]
    assert interleave(2, 3, "alternate") == [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (2, 3)]
    r50 = spec_for("cifar_resnet50")  # 8-8-8 at 16-32-64
    assert _stages(compound_plan(r50, (4, 4, 4), 0.5, 1, "together")) == [("4-4-4", "8-16-32"), ("8-8-8", "16-32-64")]
    assert _stages(compound_plan(r50, (2, 2, 2), 0.5, 1, "alternate")) == [
        ("2-2-2", "8-16-32"), ("4-4-4", "8-16-32"), ("4-4-4", "16-32-64"), ("8-8-8", "16-32-64")]


def _run(data, out, epochs=4, **options):
    torch.manual_seed(0)
    return Trainer(ResNet(R14), data, cfg(epochs=epochs), build_method("compound", **options), out=out)


def test_the_default_run_starts_at_half_the_depth_and_widths_and_grows_both_at_once(small, tmp_path):
    trainer = _run(small, tmp_path / "r")
    rows = trainer.fit()
    assert [(r["blocks"], r["widths"]) for r in rows] == [("1-1-1", "4-8-16"), ("1-1-1", "4-8-16"),
                                                          ("2-2-2", "8-16-32"), ("2-2-2", "8-16-32")]
    grows = [e for r in rows for e in r["events"] if e["kind"] == "grow"]
    assert [(e["from"], e["to"]) for e in grows] == [("1-1-1 at 4-8-16", "2-2-2 at 8-16-32")]
    assert trainer.schedule.restarts == [2.0] and trainer.schedule.kind == "cosine_restarts"
    assert trainer.model.spec.h == ((0.5, 0.5),) * 3  # interpolation halves h
    assert len(rows[-1]["lr_scales"]) == 2  # the start's group and the growth's


def test_a_copied_block_keeps_its_sources_lr_groups_and_new_channels_join_the_growths(small, tmp_path):
    trainer = _run(small, tmp_path / "r", epochs=3, grow_at=(1,))
    trainer.fit()
    ids = trainer.method.groups.ids
    for block in (0, 1):  # stage 0: block 0 and its copy, both widened from 4 to 8 inner channels
        w = ids[f"stages.0.blocks.{block}.conv1.weight"]  # (out, in, 3, 3)
        assert (w[:4, :4] == 0).all() and (w[4:] == 1).all() and (w[:, 4:] == 1).all()


def test_a_depth_growth_after_a_width_growth_copies_the_lr_groups_of_the_blocks_it_copies():
    from resgrow.grow import resize
    from resgrow.methods.widen import GrowthGroups

    model = ResNet(R14.replace(blocks=(1, 1, 1), widths=(4, 8, 16), stem_width=4))
    groups = GrowthGroups()
    groups.start(model)
    wider, pmap = resize(model, widths=(8, 16, 32))
    groups.follow(wider, pmap, new_group=True)
    deeper, pmap = resize(wider, blocks=(2, 2, 2))
    groups.follow(deeper, pmap, new_group=False)
    assert groups.names() == ["growth0", "growth1"]
    for name in ("conv1.weight", "bn1.weight", "conv2.weight"):
        source, copy = (groups.ids[f"stages.0.blocks.{b}.{name}"] for b in (0, 1))
        assert torch.equal(source, copy) and set(copy.unique().tolist()) == {0, 1}


def test_lipschitz_trigger_grows_by_the_rule_and_restarts_the_lr_to_anneal_to_the_end(small, tmp_path):
    trainer = _run(small, tmp_path / "r", epochs=5, trigger="lipschitz", grow_order="alternate", lip_window=1,
                   reserve=1)
    rows = trainer.fit()
    grows = [(i, e) for i, r in enumerate(rows, 1) for e in r["events"] if e["kind"] == "grow"]
    assert [e["to"] for _, e in grows] == ["2-2-2 at 4-8-16", "2-2-2 at 8-16-32"]  # deepens first, then widens
    last = grows[-1][0]  # the score is measured until the last growth, not after: nothing is left to decide
    assert [("lip_score" in r) for r in rows] == [e <= last for e in range(1, 6)] and rows[0]["lip_seconds"] >= 0
    deepened = grows[0][0]
    assert trainer.schedule.kind == "cosine_reset" and trainer.schedule.restarts == [float(deepened)]
    assert trainer.method.describe().startswith("compound(start 1-1-1 (default) at 0.5 of the widths")
    assert len(rows[-1]["lr_scales"]) == 2  # a growth that only deepens opens no lr group


def test_batch_adaptation_trains_the_small_net_on_a_larger_batch(small, tmp_path):
    rows = _run(small, tmp_path / "r", epochs=3, grow_at=(1,), batch_adapt=True).fit()
    # a little over 1/8 of the final net's FLOPs (the stem and the head shrink with the width alone): 4 times
    assert [r["batch_size"] for r in rows] == [200, 50, 50]


@pytest.mark.parametrize("args,words", [
    (["--trigger", "sometimes"], "unknown --trigger 'sometimes'"),
    (["--grow-order", "zigzag"], "unknown --grow-order 'zigzag'"),
    (["--lip-window", "2"], "--lip-window belong to --trigger lipschitz"),
    (["--trigger", "lipschitz", "--grow-at", "2"], "--grow-at fixes the growth epochs"),
    (["--grow-at", "1,2"], "--grow-at gives 2 epochs but the stages"),
    (["--start-width", "1"], "0 < --start-width < 1"),
    (["--start-blocks", "2-2-2"], "nothing to deepen"),
    (["--widen-init", "copy"], "unknown --widen-init 'copy'"),
    (["--arch", "resnet20"], "cannot be halved"),
    (["--schedule", "step"], "use --schedule cosine"),
    (["--trigger", "lipschitz", "--reserve", "4"], "reserve < epochs"),
])
def test_bad_compound_options_are_one_line_before_any_data_is_read(capsys, tmp_path, args, words):
    rc = main(["train", "--arch", "cifar_resnet14", "--data", str(tmp_path / "no-such-data.zip"), "--out",
               str(tmp_path / "r"), "--epochs", "4", "--method", "compound", "--device", "cpu", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err


@pytest.mark.parametrize("arch,start", [("cifar_resnet14", "1-1-1"), ("preact_resnet14", "1-1-1"),
                                        ("wrn16_2", "1-1-1"), ("resnet18", "1-1-1-1"), ("resnet50", "2-2-3-2")])
def test_every_family_grows_from_the_command_line_to_exactly_its_arch(capsys, small_zip, tmp_path, arch, start):
    out = tmp_path / arch
    partial = ["--partial-growth"] if arch == "resnet50" else []
    assert main(["train", "--arch", arch, "--data", str(small_zip), "--epochs", "2", "--batch-size", "100", "--device",
                 "cpu", "--quiet", "--method", "compound", "--start-blocks", start, "--grow-at", "1", *partial,
                 "--out", str(out)]) == 0
    spec = load_checkpoint(out / "checkpoint.pt")["spec"]
    want = spec_for(arch).replace(num_classes=10).to_dict()
    assert {k: spec[k] for k in ("blocks", "widths", "inner_widths", "stem_width")} == \
        {k: want[k] for k in ("blocks", "widths", "inner_widths", "stem_width")}


def test_compound_from_the_command_line_resumes_with_its_options_and_says_its_stages(capsys, small_zip, tmp_path):
    out = tmp_path / "r"
    base = ["train", "--arch", "cifar_resnet14", "--data", str(small_zip), "--epochs", "3", "--batch-size", "50",
            "--device", "cpu", "--quiet", "--method", "compound"]
    assert main([*base, "--out", str(out), "--grow-order", "alternate", "--stop-after", "2"]) == 0
    assert main(["train", "--resume", "--out", str(out), "--grow-order", "together"]) == 2
    assert "--grow-order together (the run's: alternate)" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["blocks"], r["widths"]) for r in rows] == [("1-1-1", "8-16-32"), ("2-2-2", "8-16-32"),
                                                          ("2-2-2", "16-32-64")]
    assert main(["compare", str(out)]) == 0
    assert "grew 1-1-1 at 8-16-32 -> 2-2-2 at 8-16-32 (epoch 1, growth 1 of 2)" in capsys.readouterr().out


def test_the_help_names_each_methods_own_default_of_a_shared_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "compound: blocks per stage to start from, e.g. 4-4-4 (default: half the final blocks)" in text
    assert "multilevel, lipgrow: blocks per stage to start from" in text
    with pytest.raises(ResgrowError, match="compound needs 0 < --start-width < 1"):
        build_method("compound", start_width=0)
