"""The ViT family: specs that round-trip through checkpoints, a model that reads its spec back, FLOPs and
parameters counted without building it (attention included), the residual form x + h * branch of both branches,
and fixed-size training, resume and evaluation from the command line."""

import json

import pytest
import torch

from resgrow.cli import main
from resgrow.errors import ResgrowError
from resgrow.measure.flops import flops_per_image, module_flops_per_image, param_count, spec_params
from resgrow.models import ArchSpec, ViT, ViTSpec, build, growable_spec, model_for, spec_for, spec_from_dict
from resgrow.train import load_model

SMALL = ViTSpec((2,), 32, 2, 64, num_classes=10)


@pytest.mark.parametrize("spec", [SMALL, SMALL.replace(pool="mean"), spec_for("vit_tiny"), spec_for("vit6_128")])
def test_a_vit_reads_its_spec_back_and_the_spec_round_trips_through_its_record(spec):
    model = model_for(spec)
    assert isinstance(model, ViT) and model.spec == spec and growable_spec(model) == spec
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    resnet = spec_for("resnet20")
    assert spec_from_dict(resnet.to_dict()) == resnet and isinstance(spec_from_dict(resnet.to_dict()), ArchSpec)


def test_registry_shapes():
    tiny, small, custom = spec_for("vit_tiny"), spec_for("vit_small"), spec_for("vit6_128", num_classes=100)
    assert (tiny.depth, tiny.dim, tiny.heads, tiny.mlp_dim, tiny.tokens) == (12, 192, 3, 768, 65)
    assert (small.dim, small.heads) == (384, 6)
    assert (custom.depth, custom.dim, custom.heads, custom.mlp_dim, custom.num_classes) == (6, 128, 4, 512, 100)


@pytest.mark.parametrize("spec", [SMALL, SMALL.replace(pool="mean", blocks=(3,)), spec_for("vit6_128")])
def test_flops_and_parameters_are_counted_from_the_spec_attention_included(spec):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = model_for(spec)
    with sdpa_kernel(SDPBackend.MATH):  # attention as two matmuls, which the counter sees (a fused kernel it may not)
        assert flops_per_image(spec, 32) == module_flops_per_image(model, (3, 32, 32))
    assert spec_params(spec) == param_count(model)
    attention = 4 * spec.depth * spec.tokens ** 2 * spec.dim  # scores and weighted sum, a multiply-add as 2
    linear = spec.tokens * sum(2 * m.weight.numel() for m in model.blocks.modules() if isinstance(m, torch.nn.Linear))
    embed = 2 * (spec.image_size // spec.patch) ** 2 * model.stem.proj.weight.numel()
    assert flops_per_image(spec) == embed + linear + attention + 2 * model.head.fc.weight.numel()


def test_both_branches_are_residual_steps_of_size_h():
    torch.manual_seed(0)
    model = model_for(SMALL).double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    block, tokens = model.blocks[0], model.stem(x)
    a = block.attn(block.norm1(tokens))
    after_attn = tokens + 0.5 * a
    want = after_attn + 0.5 * block.mlp(block.norm2(after_attn))
    block.h = 0.5
    assert torch.allclose(block(tokens), want, rtol=0, atol=1e-12)
    with torch.no_grad():
        for name in block.branch_end:
            block.get_parameter(name).zero_()
    assert torch.equal(block(tokens), tokens)  # the branches end in the named layers: zeroed, the block is identity


def test_bad_specs_and_inputs_are_one_clear_error():
    with pytest.raises(ResgrowError, match="does not split into 3 heads"):
        ViTSpec((2,), 32, 3, 64)
    with pytest.raises(ResgrowError, match="one stage"):
        ViTSpec((2, 2), 32, 2, 64)
    with pytest.raises(ResgrowError, match="pool 'max'"):
        ViTSpec((2,), 32, 2, 64, pool="max")
    with pytest.raises(ResgrowError, match="for 32x32 images, not 64x64"):
        model_for(SMALL)(torch.randn(1, 3, 64, 64))
    with pytest.raises(ResgrowError, match="unknown model family 'mlp'"):
        spec_from_dict({"family": "mlp"})
    assert isinstance(build("vit2_64"), ViT)


def test_a_vit_trains_resumes_and_evaluates_from_the_command_line(capsys, small_zip, tmp_path):
    out = tmp_path / "vit"
    base = ["train", "--arch", "vit2_64", "--data", str(small_zip), "--epochs", "2", "--batch-size", "100",
            "--device", "cpu", "--quiet", "--precision", "fp32", "--out", str(out)]
    assert main([*base, "--stop-after", "1"]) == 0
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["blocks"] == "2" and rows[-1]["widths"] == "64x2h/256"
    assert rows[0]["flops"] == flops_per_image(spec_for("vit2_64"))
    model = load_model(out)
    assert isinstance(model, ViT) and model.spec == spec_for("vit2_64")
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert "test" in capsys.readouterr().out
    assert main(["models"]) == 0
    assert "vit_tiny" in capsys.readouterr().out


def _vit(spec=SMALL, seed=0):
    """A float64 ViT whose branch ends are not at their initial scale (so that zeroing them would show)."""
    torch.manual_seed(seed)
    return model_for(spec).double()


def _x(n=4):
    return torch.randn(n, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_identity_deepening_keeps_the_function_and_interpolation_halves_h():
    from resgrow.grow import deepen

    model = _vit()
    x = _x()
    same, pmap = deepen(model, "identity")
    assert same.spec.blocks == (4,) and same.spec.h == ((1.0,) * 4,)
    assert torch.allclose(same(x), model(x), rtol=0, atol=1e-12)
    assert "blocks.1.attn.proj.weight" not in pmap and pmap["blocks.1.attn.qkv.weight"] == "blocks.0.attn.qkv.weight"
    finer, _ = deepen(model, "interpolate")
    assert finer.spec.h == ((0.5,) * 4,) and not torch.allclose(finer(x), model(x))
    partial, _ = deepen(model, "interpolate", blocks=(3,))
    assert partial.spec.h == ((1.0, 0.5, 0.5),)  # one block split (the evenly spread choice), the other kept


def test_stacking_repeats_the_whole_stack_and_doubles_only():
    from resgrow.grow import deepen

    model = _vit(SMALL.replace(blocks=(3,)))
    stacked, pmap = deepen(model, "stack")
    assert [pmap[f"blocks.{j}.mlp.fc1.weight"] for j in range(6)] == \
        [f"blocks.{i}.mlp.fc1.weight" for i in (0, 1, 2, 0, 1, 2)]
    assert stacked.spec.h == ((1.0,) * 6,)
    with pytest.raises(ResgrowError, match="repeats the whole stack"):
        deepen(model, "stack", blocks=(4,))


@pytest.mark.parametrize("heads,mlp", [(4, None), (None, 80), (6, 96)])
def test_more_heads_and_mlp_units_keep_the_function_exactly_in_training_mode_too(heads, mlp):
    from resgrow.grow import widen_vit

    model = _vit()
    x = _x()
    wider, pmap = widen_vit(model, heads=heads, mlp_dim=mlp)
    assert wider.spec.heads == (heads or 2) and wider.spec.mlp_dim == (mlp or 64) and wider.spec.dim == 32
    assert set(pmap) == {n for n, _ in wider.named_parameters()}
    for mode in (True, False):
        model.train(mode), wider.train(mode)
        assert torch.allclose(wider(x), model(x), rtol=0, atol=1e-12)
    old = torch.randn_like(model.blocks[1].mlp.fc1.weight)
    state = pmap["blocks.1.mlp.fc1.weight"][1](old)
    assert torch.equal(state[:64], old) and not state[64:].any()


def test_the_embedding_width_and_odd_additions_are_refused():
    from resgrow.grow import widen_vit

    with pytest.raises(ResgrowError, match="LayerNorm normalises over it"):
        widen_vit(_vit(), dim=48)
    with pytest.raises(ResgrowError, match="even number"):
        widen_vit(_vit(), heads=3)
    with pytest.raises(ResgrowError, match="nothing to widen"):
        widen_vit(_vit(), heads=2)


def test_multilevel_grows_a_vit_from_the_command_line(small_zip, tmp_path):
    out = tmp_path / "ml"
    assert main(["train", "--arch", "vit2_64", "--data", str(small_zip), "--epochs", "3", "--batch-size", "100",
                 "--device", "cpu", "--quiet", "--method", "multilevel", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["blocks"] for r in rows] == ["1", "2", "2"] and load_model(out).spec.h == ((0.5, 0.5),)


def test_the_lipschitz_bound_of_a_vit_block_is_h_times_the_sum_of_its_branch_bounds():
    from resgrow.measure.lipschitz import GELU_SLOPE, LipschitzMeter

    model = _vit(SMALL.replace(head_dim=12)).float()  # heads of 12 channels: the value rows are not a square
    block = model.blocks[1]
    block.h = 0.5
    with torch.no_grad():
        block.norm1.weight.uniform_(-2, 2)
        block.norm2.weight.uniform_(-3, 1)

    def sigma(w):
        return torch.linalg.svdvals(w.double())[0].item()

    a = 2 * 12  # the value rows of both heads come after their queries and keys
    attn = block.norm1.weight.abs().max().item() * sigma(block.attn.qkv.weight[2 * a:]) * sigma(block.attn.proj.weight)
    mlp = block.norm2.weight.abs().max().item() * sigma(block.mlp.fc1.weight) * GELU_SLOPE * sigma(block.mlp.fc2.weight)
    bounds = LipschitzMeter().block_bounds(model)
    assert len(bounds) == 2 and bounds[1] == pytest.approx(0.5 * (attn + mlp), rel=1e-5)
    x = torch.linspace(-6, 6, 120001, requires_grad=True)
    slope, = torch.autograd.grad(torch.nn.functional.gelu(x).sum(), x)
    assert slope.max().item() == pytest.approx(GELU_SLOPE, abs=1e-4)


def test_lipgrow_grows_a_vit_by_its_score(small, tmp_path):
    from conftest import cfg
    from resgrow.methods import build_method
    from resgrow.train import Trainer

    torch.manual_seed(0)
    trainer = Trainer(model_for(spec_for("vit2_64")), small, cfg(epochs=3),
                      build_method("lipgrow", lip_window=1, reserve=1), out=tmp_path / "r")
    rows = trainer.fit()
    assert [r["blocks"] for r in rows][-1] == "2" and all(r["lip_score"] > 0 for r in rows)


def test_multilevel_can_stack_a_vit_and_refuses_to_stack_a_resnet(capsys, small_zip, tmp_path):
    out = tmp_path / "stack"
    base = ["train", "--data", str(small_zip), "--epochs", "3", "--batch-size", "100", "--device", "cpu", "--quiet",
            "--method", "multilevel", "--deepen-mode", "stack"]
    assert main([*base, "--arch", "vit2_64", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["blocks"] for r in rows] == ["1", "2", "2"] and load_model(out).spec.h == ((1.0, 1.0),)
    assert main([*base, "--arch", "resnet20", "--out", str(tmp_path / "r")]) == 2
    assert "cannot be stacked" in capsys.readouterr().err


def test_widen_grows_a_vits_heads_and_mlp_by_its_schedule(small, tmp_path):
    from conftest import cfg
    from resgrow.methods import build_method
    from resgrow.methods.widen import vit_schedule
    from resgrow.train import Trainer

    specs = vit_schedule(spec_for("vit6_128"), 0.25, 2)
    assert [(s.heads, s.mlp_dim) for s in specs] == [(2, 128), (2, 256), (4, 512)]  # heads by pairs: 1 -> 2
    with pytest.raises(ResgrowError, match="must widen something"):
        vit_schedule(spec_for("vit2_64"), 0.99, 3)
    torch.manual_seed(0)
    trainer = Trainer(model_for(spec_for("vit2_64")), small, cfg(epochs=3),
                      build_method("widen", growths=1, start_width=0.5, widen_every=1), out=tmp_path / "w")
    rows = trainer.fit()
    assert [r["widths"] for r in rows] == ["64x2h/128", "64x2h/256", "64x2h/256"]
    assert len(rows[-1]["lr_scales"]) == 2


def test_go_wide_then_narrow_trains_a_vit_with_a_4x_mlp_and_imitates_it_block_by_block(small_zip, tmp_path):
    out = tmp_path / "w2n"
    assert main(["train", "--arch", "vit2_64", "--data", str(small_zip), "--epochs", "5", "--batch-size", "100",
                 "--device", "cpu", "--quiet", "--method", "wide2narrow", "--teacher-epochs", "1", "--imitate-epochs",
                 "1", "--distill-epochs", "1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["teacher", "imitate block 1", "imitate block 2", "distill", "labels"]
    assert rows[0]["widths"] == "64x2h/1024" and rows[-1]["widths"] == "64x2h/256"
    assert load_model(out).spec == spec_for("vit2_64")


@pytest.mark.parametrize("method", ["compound", "mgopt"])
def test_methods_that_grow_resnets_only_refuse_a_vit_before_any_data_is_read(capsys, tmp_path, method):
    rc = main(["train", "--arch", "vit4_64", "--data", str(tmp_path / "no-such-data.zip"), "--out", str(tmp_path / "r"),
               "--method", method, "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not a vit net's" in err[0], err
