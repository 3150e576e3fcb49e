"""Width growth (resgrow.grow.widen): the function is kept for every model family and init, the new
channels and the optimizer state are where they should be, and bad requests are one clear error."""

import math

import pytest
import torch

from resgrow.errors import ResgrowError
from resgrow.grow import widen, wider_spec
from resgrow.models import build
from resgrow.train import carry_state

FAMILIES = [("resnet20", (20, 38, 76), 32), ("preact_resnet20", (20, 38, 76), 32), ("wrn16_4", (80, 154, 308), 32),
            ("resnet18", (80, 154, 308, 616), 64), ("resnet50", (320, 616, 1232, 2464), 64)]


def _trained_stats(name, size, dtype=torch.float64):
    """A net whose BN statistics are not the initial ones (three training-mode forwards)."""
    torch.manual_seed(1)
    model = build(name, 10).to(dtype)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, size, size, dtype=dtype))
    return model


def _rel(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("init", ["vt", "net2wider"])
@pytest.mark.parametrize("name,widths,size", FAMILIES)
def test_widening_keeps_the_function_in_eval_mode(name, widths, size, init):
    model = _trained_stats(name, size).eval()
    wider, _ = widen(model, widths, init=init)
    assert wider.spec.widths == widths and not wider.training
    x = torch.randn(8, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        assert _rel(model(x), wider(x)) < 1e-10
    model32 = _trained_stats(name, size, torch.float32).eval()
    with torch.no_grad():
        assert _rel(model32(x.float()), widen(model32, widths, init=init)[0](x.float())) < 1e-5


@pytest.mark.parametrize("name,widths,size", FAMILIES)
def test_vt_pairs_cancel_in_training_mode_too(name, widths, size):
    """Batch statistics differ from running ones, and the pairs still cancel exactly; with the variance-transfer
    factor, a BN's eps leaves a difference of the order of 1e-6 (CIFAR families)."""
    model = _trained_stats(name, size)
    x = torch.randn(32, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        assert _rel(model(x), widen(model, widths, rescale=False)[0](x)) < 1e-10
        if size == 32:
            assert _rel(model(x), widen(model, widths)[0](x)) < 1e-5


def test_variance_transfer_scales_what_feeds_a_bn_and_nothing_else():
    model = _trained_stats("wrn10_2", 32)  # pre-activation, projection shortcuts: old channels stay first
    wider, _ = widen(model, (64, 128, 256))  # every fan-in doubles: c = sqrt(1/2)
    c = math.sqrt(0.5)
    old, new = model.stages[1].blocks[0], wider.stages[1].blocks[0]
    # conv1 feeds bn2: its old block is scaled by c, and bn2's statistics follow (eps folded into the variance)
    assert torch.allclose(new.conv1.weight[:64, :32], c * old.conv1.weight, rtol=0, atol=1e-15)
    assert torch.allclose(new.bn2.running_mean[:64], c * old.bn2.running_mean, rtol=0, atol=1e-15)
    assert torch.allclose(new.bn2.running_var[:64] + 1e-5, c * c * (old.bn2.running_var + 1e-5), rtol=1e-12)
    # conv2 feeds the residual add, the projection and the classifier nothing normalised: their weights are kept
    assert torch.equal(new.conv2.weight[:64, :64], old.conv2.weight)
    assert torch.equal(new.shortcut[0].weight[:64, :32], old.shortcut[0].weight)
    assert torch.equal(wider.head[4].weight[:, :128], model.head[4].weight)
    # new channels of a pair read the same weights (V) and are read with opposite ones (Z, -Z)
    assert torch.equal(new.conv1.weight[64], new.conv1.weight[65]) and not torch.equal(new.conv1.weight[64], new.conv1.weight[66])
    assert torch.equal(new.conv2.weight[:, 64], -new.conv2.weight[:, 65]) and new.conv2.weight[:, 64].abs().sum() > 0
    assert float(new.conv1.weight[64:].detach().std()) == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.1)  # He, new fan-in


def test_a_zero_padding_shortcut_gets_the_previous_stages_new_channels_first():
    model = build("resnet20", 10)  # stage 1 pads stage 0's 16 channels to 32
    wider, pmap = widen(model, (20, 38, 76))
    old, new = model.stages[1].blocks[1].conv1.weight, wider.stages[1].blocks[1].conv1.weight
    c = math.sqrt(32 / 38)
    # stage 1's channels: stage 0's 16 old ones, its 4 new ones, then stage 1's own old 16..31, then 2 new
    assert torch.allclose(new[:16, :16], c * old[:16, :16]) and torch.allclose(new[:16, 20:36], c * old[:16, 16:32])
    state = pmap["stages.1.blocks.1.conv1.weight"][1](old)
    assert torch.equal(state[:16, 20:36], old[:16, 16:32]) and not state[:, 16:20].any() and not state[36:].any()


def test_the_parameter_map_carries_old_momentum_and_starts_new_units_at_zero():
    model = build("wrn16_4", 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        opt.state[p]["momentum_buffer"] = torch.randn_like(p)
    wider, pmap = widen(model, (80, 154, 308))
    assert set(pmap) == {n for n, _ in wider.named_parameters()}
    new_opt = torch.optim.SGD(wider.parameters(), lr=0.1, momentum=0.9)
    carry_state(model, opt, wider, new_opt, pmap)
    old_buf = opt.state[model.stages[2].blocks[0].conv2.weight]["momentum_buffer"]
    new_buf = new_opt.state[wider.stages[2].blocks[0].conv2.weight]["momentum_buffer"]
    assert torch.equal(new_buf[:256, :256], old_buf) and not new_buf[256:].any() and not new_buf[:, 256:].any()


def test_net2wider_copies_channels_and_shares_their_readers_weights():
    model = _trained_stats("resnet20", 32)
    wider, _ = widen(model, (16, 32, 72), init="net2wider", generator=torch.Generator().manual_seed(3))
    fc_old, fc_new = model.head[2].weight, wider.head[2].weight
    # each of the 8 new channels of the last stage copies one of the old 64; readers split its weight among copies
    src = {j: [i for i in range(64) if torch.equal(wider.stages[2].blocks[2].bn2.running_var[j],
                                                   model.stages[2].blocks[2].bn2.running_var[i])] for j in range(64, 72)}
    assert all(len(s) == 1 for s in src.values())  # each new channel is a copy of exactly one old one
    for j, (i,) in src.items():
        copies = 1 + sum(s == [i] for s in src.values())
        assert torch.equal(fc_new[:, j], fc_new[:, i]) and torch.allclose(fc_new[:, i] * copies, fc_old[:, i])
    noisy, _ = widen(model.eval(), (16, 32, 72), init="net2wider", noise=0.01)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert 0 < _rel(model(x), noisy(x)) < 0.05  # noise breaks exactness, a little


def test_wider_spec_keeps_inner_widths_in_proportion_and_the_stem_tied():
    spec = build("resnet50", 10).spec
    wide = wider_spec(spec, (320, 640, 1280, 2560))
    assert wide.inner_widths == (80, 160, 320, 640) and wide.stem_width == 80
    assert wider_spec(build("resnet20", 10).spec, (20, 40, 80)).stem_width == 20


@pytest.mark.parametrize("args,match", [
    (dict(widths=(21, 38, 76)), "odd number"),
    (dict(widths=(12, 32, 64)), "cannot shrink"),
    (dict(widths=(20, 38)), "one per stage"),
    (dict(widths=(20, 38, 76), init="copy"), "unknown widening init 'copy'"),
])
def test_bad_widening_is_one_clear_error(args, match):
    with pytest.raises(ResgrowError, match=match):
        widen(build("resnet20", 10), **args)
    with pytest.raises(ResgrowError, match="only resgrow ResNets"):
        widen(torch.nn.Linear(2, 2), (4,))
