"""AdamW as the run's optimizer: its whole state made up front, carried across a growth, kept in checkpoints
(a run resumes bit for bit), and `--recipe vit`'s settings, refused where they cannot train before any data."""

import json

import pytest
import torch

from conftest import cfg, weights
from resgrow.cli import main
from resgrow.grow import deepen
from resgrow.methods import build_method
from resgrow.models import ArchSpec, ResNet, model_for, spec_for
from resgrow.train import Trainer, carry_state, load_checkpoint, make_optimizer

R14 = ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8)


def test_adamw_state_is_made_up_front_and_a_copy_gets_its_sources_moments_and_count():
    torch.manual_seed(0)
    model = ResNet(R14.replace(blocks=(1, 1, 1)))
    opt = make_optimizer(model, cfg(optimizer="adamw"), 1e-3, graph=False)
    assert all(set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"} for p in model.parameters())
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    deeper, pmap = deepen(model, "interpolate")
    new_opt = make_optimizer(deeper, cfg(optimizer="adamw"), 1e-3, graph=False)
    carry_state(model, opt, deeper, new_opt, pmap)
    src, copy = model.stages[0].blocks[0].conv1.weight, deeper.stages[0].blocks[1].conv1.weight
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(new_opt.state[copy][key], opt.state[src][key])
    assert float(new_opt.state[copy]["step"]) == 1.0


def _run(data, out, resume=False):
    torch.manual_seed(0 if not resume else 99)
    return Trainer(ResNet(R14), data, cfg(epochs=3, optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup=1),
                   build_method("multilevel", start_blocks="1-1-1"), out=out, resume=resume)


def test_an_adamw_run_resumes_bit_for_bit_across_a_growth(small, tmp_path):
    full = _run(small, tmp_path / "full")
    full.fit()
    _run(small, tmp_path / "part").fit(until=2)  # the growth at epoch 1, then one more epoch
    assert "optimizer_state" in load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    resumed = _run(small, tmp_path / "part", resume=True)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_vit_recipe_fills_what_the_command_leaves_out(small_zip, tmp_path):
    out = tmp_path / "vit"
    assert main(["train", "--arch", "vit2_64", "--data", str(small_zip), "--epochs", "4", "--batch-size", "100",
                 "--device", "cpu", "--quiet", "--recipe", "vit", "--lr", "5e-4", "--out", str(out)]) == 0
    config = json.loads((out / "run.json").read_text())["config"]
    assert (config["optimizer"], config["lr"], config["weight_decay"], config["label_smoothing"], config["warmup"]) \
        == ("adamw", 5e-4, 0.05, 0.1, 0.2)
    assert model_for(spec_for("vit2_64")).spec.blocks == (2,)


@pytest.mark.parametrize("args,words", [
    (["--optimizer", "lamb"], "unknown optimizer 'lamb'"),
    (["--optimizer", "adamw", "--betas", "0.9,1.5"], "betas must be two numbers in [0, 1)"),
])
def test_bad_optimizer_settings_are_one_line_before_any_data_is_read(capsys, tmp_path, args, words):
    rc = main(["train", "--arch", "resnet20", "--data", str(tmp_path / "no-such-data.zip"), "--out",
               str(tmp_path / "r"), "--device", "cpu", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err


def test_under_adamw_an_element_groups_lr_scale_scales_its_whole_update():
    """AdamW normalises the gradient, so a scaled gradient would not move it: the scale applies to the update."""
    from resgrow.methods.base import SliceGroups
    from resgrow.train.groups import SliceScales

    torch.manual_seed(0)
    plain = torch.nn.Linear(3, 4, bias=False)
    scaled = torch.nn.Linear(3, 4, bias=False)
    scaled.load_state_dict(plain.state_dict())
    start = plain.weight.detach().clone()
    slices = SliceScales(torch.device("cpu"))
    ids = torch.tensor([0, 0, 1, 1]).view(4, 1).expand(4, 3)
    slices.install(scaled, SliceGroups(["growth0", "growth1"], {"weight": ids}, [1.0, 0.25]), updates=True)
    x = torch.randn(8, 3)
    for model in (plain, scaled):
        opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.05)
        model(x).square().sum().backward()
        if model is scaled:
            slices.before_step()
        opt.step()
        if model is scaled:
            slices.after_step()
    step_plain, step_scaled = plain.weight.detach() - start, scaled.weight.detach() - start
    assert torch.allclose(step_scaled[:2], step_plain[:2], atol=1e-7)
    assert torch.allclose(step_scaled[2:], 0.25 * step_plain[2:], atol=1e-7) and step_plain[2:].abs().min() > 1e-3
