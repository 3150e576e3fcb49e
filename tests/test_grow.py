import csv
import json

import pytest
import torch
from torch import nn

from conftest import TINY
from resgrow.errors import ResgrowError
from resgrow.grow import deepen
from resgrow.measure import param_count
from resgrow.measure.lipschitz import LipschitzMeter, bn_bound, conv_operator_norm
from resgrow.methods import Change, LipGrow, Multilevel, build_method
from resgrow.methods.depth import default_start, doublings, growth_path, parse_blocks, reachable_starts
from resgrow.methods.lipgrow import LipGrowTrigger
from resgrow.models import ArchSpec, ResNet, build, spec_for
from resgrow.report.metrics import MetricsLog
from resgrow.train import CHECKPOINT, TrainConfig, Trainer, load_checkpoint


def randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
            m.running_mean = torch.randn(m.running_mean.shape, generator=g) * 0.1
            m.running_var = torch.rand(m.running_var.shape, generator=g) + 0.5
    return model


@pytest.mark.parametrize("name,size", [("resnet20", 32), ("preact_resnet20", 32), ("wrn16_4", 32), ("resnet18", 32),
                                       ("cifar_resnet8", 32)])
def test_identity_deepening_preserves_outputs(name, size):
    torch.manual_seed(0)
    model = randomize_bn(build(name)).eval()
    x = torch.randn(4, 3, size, size)
    deeper, pmap = deepen(model, "identity")
    assert deeper.spec.blocks == tuple(2 * b for b in model.spec.blocks)
    zeroed = [f"stages.{s}.blocks.{j}.{n}" for s, stage in enumerate(deeper.stages) for j, b in enumerate(stage.blocks)
              if j % 2 for n in b.branch_end]
    assert zeroed and not set(zeroed) & set(pmap)  # they start at zero: with zero momentum, not the source's
    assert (deeper(x) - model(x)).abs().max() <= 1e-5
    twice, _ = deepen(deeper, "identity", stages=[1])
    assert (twice(x) - model(x)).abs().max() <= 1e-5
    assert twice.spec.blocks[1] == 4 * model.spec.blocks[1] and twice.spec.blocks[0] == 2 * model.spec.blocks[0]


@pytest.mark.parametrize("mode", ["interpolate", "duplicate"])
def test_interpolate_and_duplicate_double_blocks_and_halve_h(mode):
    torch.manual_seed(0)
    model = randomize_bn(build("resnet20"))
    deeper, pmap = deepen(model, mode)
    assert deeper.spec.blocks == (6, 6, 6)
    assert deeper.spec.h == ((0.5,) * 6,) * 3
    assert param_count(deeper) == param_count(build("resnet38"))
    assert param_count(deepen(deeper, mode)[0]) == param_count(build("resnet74"))
    old = model.state_dict()
    new = deeper.state_dict()
    # stage 0 keeps its shape everywhere: block 2i and 2i+1 are both copies of old block i (weights and BN stats)
    for i in range(3):
        for j in (2 * i, 2 * i + 1):
            for key in ("conv1.weight", "bn1.weight", "bn2.running_mean", "bn2.running_var"):
                assert torch.equal(new[f"stages.0.blocks.{j}.{key}"], old[f"stages.0.blocks.{i}.{key}"])
    # stage 1 starts with a downsampling block: it is kept once, its partner copies the next block
    assert torch.equal(new["stages.1.blocks.0.conv1.weight"], old["stages.1.blocks.0.conv1.weight"])
    assert torch.equal(new["stages.1.blocks.1.conv1.weight"], old["stages.1.blocks.1.conv1.weight"])
    assert pmap["stages.1.blocks.1.conv2.weight"] == "stages.1.blocks.1.conv2.weight"
    assert pmap["stages.1.blocks.5.bn2.bias"] == "stages.1.blocks.2.bn2.bias"
    assert torch.equal(new["head.2.weight"], old["head.2.weight"])
    assert set(pmap) == {n for n, _ in deeper.named_parameters()}  # every parameter has a source here


def test_one_block_stage_gets_a_zero_branch_partner():
    torch.manual_seed(0)
    model = randomize_bn(ResNet(TINY)).eval()  # 1-1-1: stages 1 and 2 hold only a downsampling block
    deeper, pmap = deepen(model, "interpolate")
    assert deeper.spec.blocks == (2, 2, 2)
    assert torch.equal(deeper.stages[1].blocks[1].bn2.weight, torch.zeros(16))
    assert "stages.1.blocks.1.bn2.weight" not in pmap and "stages.1.blocks.1.conv1.weight" not in pmap
    assert pmap["stages.0.blocks.1.conv1.weight"] == "stages.0.blocks.0.conv1.weight"


def test_partial_growth_splits_evenly_spread_blocks_and_keeps_the_function_in_identity_mode():
    """ResNet-50's 3-4-6-3 is no doubling of any start: 1-1-2-1 -> 2-2-4-2 -> 3-4-6-3, each stage capped."""
    torch.manual_seed(0)
    spec = ArchSpec("bottleneck", (2, 2, 4, 2), (32, 64, 128, 256), stem="imagenet", stem_width=16, shortcut="B")
    model = randomize_bn(ResNet(spec)).eval()
    x = torch.randn(2, 3, 32, 32)
    same, pmap = deepen(model, "identity", blocks=(3, 4, 6, 3))
    assert same.spec.blocks == (3, 4, 6, 3) and (same(x) - model(x)).abs().max() <= 1e-5
    grown, pmap = deepen(model, "interpolate", blocks=(3, 4, 6, 3))
    # stage 2 (4 -> 6) splits blocks 1 and 3 (floor(0.5 * 4/2), floor(1.5 * 4/2)); the others keep h
    assert grown.spec.h == ((1.0, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5), (1.0, 0.5, 0.5, 1.0, 0.5, 0.5), (1.0, 0.5, 0.5))
    sources = [pmap[f"stages.2.blocks.{j}.conv1.weight"] for j in range(6)]
    assert sources == [f"stages.2.blocks.{i}.conv1.weight" for i in (0, 1, 1, 2, 3, 3)]
    assert torch.equal(grown.state_dict()["stages.2.blocks.5.bn1.running_var"],
                       model.state_dict()["stages.2.blocks.3.bn1.running_var"])
    assert deepen(model, "interpolate", blocks=(4, 4, 8, 4))[0].spec.h == deepen(model, "interpolate")[0].spec.h
    for bad, match in (((2, 2, 9, 2), "between its blocks and twice them"), ((1, 2, 4, 2), "between its blocks"),
                       ((3, 4), "4 stages"), ((2, 2, 4, 2), "nothing to grow")):
        with pytest.raises(ResgrowError, match=match):
            deepen(model, blocks=bad)
    with pytest.raises(ResgrowError, match="not both"):
        deepen(model, stages=[0], blocks=(3, 4, 6, 3))


def test_deepen_errors():
    with pytest.raises(ResgrowError, match="only resgrow ResNets"):
        deepen(nn.Sequential(nn.Conv2d(3, 3, 3)))
    with pytest.raises(ResgrowError, match="unknown deepening mode"):
        deepen(build("resnet20"), "stack")
    with pytest.raises(ResgrowError, match="out of range"):
        deepen(build("resnet20"), stages=[3])
    model = build("resnet20")
    model.stages[0].blocks[1] = nn.Identity()
    with pytest.raises(ResgrowError, match="resgrow residual blocks"):
        deepen(model)


def test_momentum_of_a_copy_equals_its_source(mini):
    torch.manual_seed(0)
    trainer = Trainer(ResNet(TINY), mini, TrainConfig(epochs=1, batch_size=100, device="cpu", quiet=True))
    trainer.fit()
    before = {n: trainer.optimizer.state[p]["momentum_buffer"].clone() for n, p in trainer.model.named_parameters()}
    deeper, pmap = deepen(trainer.model, "interpolate")
    trained = trainer.train_seconds
    trainer.apply_change(Change(deeper, pmap, "grew"))
    assert trainer.train_seconds > trained  # a size change is booked as training time
    after = {n: trainer.optimizer.state[p]["momentum_buffer"] for n, p in trainer.model.named_parameters()}
    for key in ("conv1.weight", "bn1.weight", "conv2.weight", "bn2.bias"):
        assert torch.equal(after[f"stages.0.blocks.1.{key}"], before[f"stages.0.blocks.0.{key}"])
        assert torch.equal(after[f"stages.0.blocks.0.{key}"], before[f"stages.0.blocks.0.{key}"])
    assert before["stages.0.blocks.0.conv1.weight"].abs().sum() > 0
    assert torch.equal(after["stages.1.blocks.1.conv1.weight"], torch.zeros_like(after["stages.1.blocks.1.conv1.weight"]))


def explicit_norm(conv, size):
    n = conv.in_channels * size * size
    cols = [nn.functional.conv2d(e.view(1, conv.in_channels, size, size), conv.weight, stride=conv.stride,
                                 padding=conv.padding).flatten() for e in torch.eye(n)]
    return torch.linalg.matrix_norm(torch.stack(cols, 1).double(), 2).item()


@pytest.mark.parametrize("cin,cout,k,stride,pad,size", [(3, 4, 3, 1, 1, 6), (4, 6, 3, 2, 1, 7), (3, 5, 1, 2, 0, 6),
                                                        (2, 3, 3, 2, 1, 8), (4, 4, 3, 1, 0, 5)])
def test_power_iteration_matches_the_exact_singular_value(cin, cout, k, stride, pad, size):
    torch.manual_seed(cin * 100 + size)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
    exact = explicit_norm(conv, size)
    est, u = conv_operator_norm(conv, (size, size), iters=200)
    assert abs(est - exact) / exact < 0.01
    warm, _ = conv_operator_norm(conv, (size, size), iters=1, u=u)  # warm start: one iteration is enough
    assert abs(warm - exact) / exact < 0.01


@pytest.mark.parametrize("cin,cout,k,stride,pad,size", [(4, 6, 3, 2, 1, 7), (3, 5, 1, 2, 0, 6), (4, 4, 3, 1, 0, 5)])
def test_grouped_power_iteration_matches_the_exact_singular_values(cin, cout, k, stride, pad, size):
    from resgrow.measure.lipschitz import grouped_operator_norms

    torch.manual_seed(cin * 10 + size)
    convs = [nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False) for _ in range(3)]
    starts = [torch.randn(1, cin, size, size) for _ in convs]
    sigmas, vectors = grouped_operator_norms(convs, (size, size), starts, iters=200)
    for conv, sigma, start, u in zip(convs, sigmas.tolist(), starts, vectors):
        exact = explicit_norm(conv, size)
        assert abs(sigma - exact) / exact < 0.01
        alone, _ = conv_operator_norm(conv, (size, size), iters=200, u=start)  # the same iteration, one conv at a time
        assert sigma == pytest.approx(alone, rel=1e-4) and u.shape == start.shape


def test_meter_iterates_same_shaped_convs_together(monkeypatch):
    """A 3-3-3 net has 18 branch convs but 5 (shape, stride, feature-map size) groups: a warm call runs
    (iters + 1) grouped convolutions per group, not per conv, and the bounds do not change."""
    from resgrow.measure import lipschitz

    torch.manual_seed(0)
    model = randomize_bn(ResNet(ArchSpec("basic", (3, 3, 3), (8, 16, 32), stem_width=8))).eval()
    meter = LipschitzMeter(32, iters=2, cold_iters=300)
    expected = []
    for (_, _, block), size in zip(model.iter_blocks(), lipschitz.block_input_sizes(model, 32)):
        bound, cur = block.h, size
        for layer in lipschitz._branch_layers(block):
            if isinstance(layer, nn.Conv2d):
                sigma, _ = conv_operator_norm(layer, cur, 600)
                bound, cur = bound * sigma, lipschitz._down(cur, layer.stride[0])
            else:
                bound *= bn_bound(layer)
        expected.append(bound)
    assert meter.block_bounds(model) == pytest.approx(expected, rel=0.01)  # cold
    calls = []
    real = lipschitz.F.conv2d
    monkeypatch.setattr(lipschitz.F, "conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert meter.block_bounds(model) == pytest.approx(expected, rel=0.01)  # warm: 2 iterations
    assert len(calls) == 5 * (2 + 1)


def test_meter_runs_without_cudnn_autotuning_and_restores_the_setting(monkeypatch):
    """Autotuning every grouped shape anew after each growth cost about 1 s per cold call on an H100."""
    from resgrow.measure import lipschitz

    seen = []
    real = lipschitz.F.conv2d
    monkeypatch.setattr(lipschitz.F, "conv2d", lambda *a, **k: seen.append(torch.backends.cudnn.benchmark) or real(*a, **k))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    LipschitzMeter(32, iters=2, cold_iters=3).block_bounds(ResNet(TINY).eval())
    assert seen and not any(seen)
    assert torch.backends.cudnn.benchmark is True
    monkeypatch.setattr(lipschitz.LipschitzMeter, "_block_bounds", lambda self, model: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        LipschitzMeter(32).block_bounds(ResNet(TINY))
    assert torch.backends.cudnn.benchmark is True  # restored on an error too


def test_model_score_is_the_mean_of_the_block_bounds(monkeypatch):
    monkeypatch.setattr(LipschitzMeter, "block_bounds", lambda self, model: [1.0, 2.0, 6.0])
    assert LipschitzMeter(32).score(ResNet(TINY)) == 3.0


def test_block_bounds_are_products_times_h():
    torch.manual_seed(0)
    model = randomize_bn(ResNet(TINY)).eval()
    meter = LipschitzMeter(32, iters=2, cold_iters=300)
    b = model.stages[0].blocks[0]
    c1, _ = conv_operator_norm(b.conv1, (32, 32), 600)
    c2, _ = conv_operator_norm(b.conv2, (32, 32), 600)
    expected = c1 * bn_bound(b.bn1) * c2 * bn_bound(b.bn2)
    bounds = meter.block_bounds(model)
    assert len(bounds) == 3 and bounds[0] == pytest.approx(expected, rel=0.01)
    b.h = 0.5  # warm-started now: 2 iterations keep the estimate
    assert meter.block_bounds(model)[0] == pytest.approx(0.5 * expected, rel=0.01)
    assert bn_bound(b.bn1) == pytest.approx(float((b.bn1.weight.detach().abs() / (b.bn1.running_var + b.bn1.eps).sqrt()).max()))


@pytest.mark.parametrize("arch", ["resnet20", "preact_resnet20", "resnet18", "resnet50"])
def test_block_input_sizes_follow_the_forward_pass(arch):
    """The meter's feature-map sizes (H, W) for each block equal what a forward pass feeds the block."""
    from resgrow.measure.lipschitz import block_input_sizes

    model = build(arch).eval()
    for size in [(32, 32), (23, 40)]:
        seen = []
        hooks = [block.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(tuple(a[0].shape[2:])))
                 for _, _, block in model.iter_blocks()]
        with torch.no_grad():
            model(torch.zeros(1, 3, *size))
        for hk in hooks:
            hk.remove()
        assert block_input_sizes(model, size) == seen


def test_lipgrow_measures_at_the_data_image_size():
    class Ctx:  # what the trainer hands a method at an epoch end
        model, epoch, epochs, image_size, row, shared_value = ResNet(TINY), 1, 10, (24, 40), {}, float
        device_lock = None

    lg = LipGrow(start_blocks="1-1-1", lip_window=2)
    lg.trigger = LipGrowTrigger(1, 10, window=2)
    lg.on_epoch_end(Ctx)
    assert tuple(lg.meter.vectors["stages.0.blocks.0.conv1.weight"].shape[2:]) == (24, 40)
    assert tuple(lg.meter.vectors["stages.2.blocks.0.conv1.weight"].shape[2:]) == (12, 20)  # after stage 1's stride 2
    assert tuple(lg.meter.vectors["stages.2.blocks.0.conv2.weight"].shape[2:]) == (6, 10)  # after conv1's stride 2


def test_warm_starts_follow_the_copied_weights_through_a_growth():
    """Kept by block position, a grown net's blocks started from other convs' vectors, and two
    iterations per epoch left copies up to 30% low (7% on the score) for epochs after a growth,
    which biased LipGrow's L0 low and its ratio high. Following the growth's map, they are exact at once."""
    torch.manual_seed(0)
    model = randomize_bn(ResNet(ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8))).eval()
    lg = LipGrow(lip_window=2)
    lg.meter = LipschitzMeter(32, iters=2, cold_iters=300)
    for _ in range(3):
        lg.meter.score(model)

    class Ctx:
        epoch, train_seconds = 5, 1.0

    Ctx.model = model
    deeper = lg.grow(Ctx, "test").model.eval()  # duplicate: every new conv is a copy of an old one
    convs = {f"{n}.weight" for n, m in deeper.named_modules() if isinstance(m, torch.nn.Conv2d) and ".blocks." in n}
    assert set(lg.meter.vectors) == convs
    reference = LipschitzMeter(32, cold_iters=600).block_bounds(deeper)
    got = lg.meter.block_bounds(deeper)  # warm: 2 iterations
    assert got == pytest.approx(reference, rel=0.01)


def scripted(trigger, scores, start=1):
    """Drive LipGrow's rule with a score sequence; return the epochs at which it grows."""
    return [epoch for epoch, s in enumerate(scores, start=start) if trigger.update(epoch, s)[0]]


def test_lipgrow_trigger_follows_the_rule():
    t = LipGrowTrigger(grows=2, epochs=40, threshold=1.4, window=3, reserve=5)
    # L0 = mean(1,1,1) = 1 at epoch 3; epoch 4: (1+1+1.5)/3 = 1.17; epoch 5: (1+1.5+2)/3 = 1.5 > 1.4 -> grow
    scores = [1, 1, 1, 1.5, 2.0] + [1.0] * 35
    assert scripted(t, scores) == [5, 35]  # the second never triggers: forced at 40 - reserve
    assert t.grows_left == 0


def test_lipgrow_just_below_threshold_does_not_trigger():
    t = LipGrowTrigger(grows=1, epochs=40, threshold=1.4, window=2, reserve=5)
    assert scripted(t, [1.0, 1.0, 1.39, 1.39, 1.39]) == []
    assert scripted(t, [1.8], start=6) == [6]  # (1.39 + 1.8) / 2 = 1.595 > 1.4


def test_lipgrow_grows_only_above_the_threshold_and_restarts_its_window():
    t = LipGrowTrigger(grows=2, epochs=40, threshold=1.4, window=1, reserve=5)
    assert t.update(1, 2.0) == (False, "", 1.0)  # L0 = 2.0
    assert t.update(2, 2.8) == (False, "", 1.4)  # 2.8 / 2.0 is exactly 1.4: not above it
    assert t.update(3, 3.0)[0]
    t = LipGrowTrigger(grows=2, epochs=40, threshold=1.4, window=3, reserve=5)
    assert scripted(t, [1, 1, 1, 1.5, 2.0]) == [5]
    # the window and L0 start again with the grown model: no ratio until 3 new scores, then L0 = their mean
    assert [t.update(e, s)[2] for e, s in zip((6, 7, 8, 9), (5.0, 5.0, 5.0, 6.5))] == [None, None, 1.0, 1.1]


def test_lipgrow_forced_grows_leave_the_reserve():
    t = LipGrowTrigger(grows=2, epochs=40, threshold=1.4, window=3, reserve=5)
    grown = scripted(t, [1.0] * 40)
    assert grown == [31, 35]  # 40 - 5 - (window + 1) and 40 - 5
    assert 40 - grown[-1] == 5


def test_lipgrow_forced_grows_split_a_run_too_short_for_the_window():
    # room for window + 1 between grows: the spacing is the window's (the 160- and 164-epoch runs)
    assert LipGrowTrigger(grows=2, epochs=164).deadlines() == [123, 134]
    assert LipGrowTrigger(grows=2, epochs=160).deadlines() == [120, 131]
    # 12 epochs, reserve 2, window 10: an even split of the 10 epochs before the reserve, not a grow at epoch -1
    t = LipGrowTrigger(grows=2, epochs=12, window=10, reserve=2)
    assert t.deadlines() == [5, 10] and scripted(t, [1.0] * 12) == [5, 10]
    assert LipGrowTrigger(grows=2, epochs=3).deadlines() == [1, 2]  # reserve 1 (30/164 of 3, at least 1)
    u = LipGrowTrigger.from_state_dict(t.state_dict())  # the spacing survives a resume after the first grow
    assert u.deadlines() == t.deadlines() == []


def test_lipgrow_start_event_says_when_the_window_cannot_trigger():
    class Ctx:
        epochs, schedule, model = 12, type("Schedule", (), {"kind": "cosine"}), build("resnet38", 10)
    lg = build_method("lipgrow", reserve=2)
    event = lg.on_run_start(Ctx).event["text"]
    assert "at the latest after epoch 10 (too short for --lip-window 10: a grow before epoch 11 can only be forced)" in event
    Ctx.epochs = 40
    assert "too short" not in build_method("lipgrow", reserve=2).on_run_start(Ctx).event["text"]


def test_lipgrow_trigger_state_round_trips_and_checks_its_options():
    t = LipGrowTrigger(grows=2, epochs=40, window=3)
    assert t.reserve == 7  # 30 of 164 epochs, scaled
    scripted(t, [1.0, 1.2])
    u = LipGrowTrigger.from_state_dict(t.state_dict())
    assert u.state_dict() == t.state_dict()
    assert scripted(u, [1.5], start=3) == scripted(t, [1.5], start=3) == []  # L0 = 1.233 at epoch 3
    for bad in (dict(grows=0), dict(window=0), dict(threshold=0), dict(reserve=40), dict(reserve=0), dict(grows=4, reserve=37)):
        with pytest.raises(ResgrowError, match="LipGrow needs"):
            LipGrowTrigger(**{"grows": 1, "epochs": 40, **bad})
    # as many grows as epochs before the reserve: all of them happen before it, the last one right at it
    assert scripted(LipGrowTrigger(grows=3, epochs=4, window=1, reserve=1), [1.0] * 4) == [1, 2, 3]
    with pytest.raises(ResgrowError, match="--lip-window >= 1"):
        build_method("lipgrow", lip_window=0)


def test_method_options_and_blocks():
    assert parse_blocks("3-3-3") == (3, 3, 3) and doublings((3, 3, 3), (12, 12, 12)) == 2
    assert default_start((12, 12, 12)) == (3, 3, 3) and default_start((6, 6, 6)) == (3, 3, 3)
    assert default_start((8, 8, 8)) == (2, 2, 2) and reachable_starts((12, 12, 12)) == [(6, 6, 6), (3, 3, 3)]
    with pytest.raises(ResgrowError, match="doubling every stage; no start reaches it.* or give --partial-growth$"):
        doublings((3, 3, 3), (9, 9, 9))
    with pytest.raises(ResgrowError, match="from 4-4-4 by doubling every stage; --start-blocks can be 6-6-6 or 3-3-3, "
                                           "or give --partial-growth$"):
        doublings((4, 4, 4), (12, 12, 12))
    # partial growth: every stage doubles, capped at its final blocks; where doubling reaches, the same path
    assert default_start((3, 4, 6, 3), partial=True) == (1, 1, 2, 1) and default_start((12, 12, 12), partial=True) == (3, 3, 3)
    assert growth_path((1, 1, 2, 1), (3, 4, 6, 3), partial=True) == [(2, 2, 4, 2), (3, 4, 6, 3)]
    assert growth_path((3, 3, 3), (9, 9, 9), partial=True) == [(6, 6, 6), (9, 9, 9)]
    assert growth_path((2, 2), (3, 8), partial=True) == [(3, 4), (3, 8)]
    assert growth_path((3, 3), (12, 12), partial=True) == growth_path((3, 3), (12, 12)) == [(6, 6), (12, 12)]
    with pytest.raises(ResgrowError, match="exceed the final blocks"):
        growth_path((2, 5), (3, 4), partial=True)
    with pytest.raises(ResgrowError, match="--grow-at does not apply to method 'lipgrow'"):
        build_method("lipgrow", grow_at=(10,))
    assert isinstance(build_method("multilevel", start_blocks="1-1-1", grow_at=None), Multilevel)
    # Chang et al.'s 60 and 110 of 160 epochs, scaled: the first cycle 37.5% of the run, the others equal
    assert Multilevel().grow_epochs(160, 2) == [60, 110] and Multilevel().grow_epochs(40, 2) == [15, 28]
    assert Multilevel().grow_epochs(160, 3) == [60, 93, 127] and Multilevel().grow_epochs(100, 1) == [38]


def test_the_first_line_names_the_default_start_and_epochs_it_will_use():
    """resnet38's 6-6-6 cannot be quartered: the header must say 3-3-3, not "final/4"."""
    ml, lg = Multilevel(), LipGrow()
    assert ml.describe() == "multilevel(start default, grow at default)"
    ml.prepare(spec_for("resnet38"), 40, "cosine")
    assert ml.describe() == "multilevel(start 3-3-3 (default), grow at [15] (default))"
    lg.prepare(spec_for("resnet74"), 164, "cosine")
    assert lg.describe().startswith("lipgrow(start 3-3-3 (default), threshold 1.4")
    given = Multilevel(start_blocks="6-6-6", grow_at=[20])
    given.prepare(spec_for("resnet74"), 40, "cosine")
    assert given.describe() == "multilevel(start 6-6-6, grow at [20])"


FINAL = ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8)


def _run(data, method, out, epochs=3, until=None, resume=False, quiet=True):
    torch.manual_seed(0)
    t = Trainer(ResNet(FINAL), data, TrainConfig(epochs=epochs, batch_size=100, device="cpu", quiet=quiet),
                method=method, out=out, resume=resume)
    t.fit(until=until)
    return t


def test_a_fixed_size_run_can_follow_lipgrows_learning_rate(small, tmp_path):
    """The restart baseline of a LipGrow run: --schedule cosine_reset --restarts <its grow epochs> gives
    the fixed-size net the same lr, step for step, so a gain from growth is told apart from one from restarts."""
    grown = _run(small, LipGrow(lip_window=1, reserve=1), tmp_path / "lipgrow", epochs=4)
    at = grown.schedule.restarts
    assert len(at) == 1
    torch.manual_seed(0)
    fixed = Trainer(ResNet(FINAL), small, TrainConfig(epochs=4, batch_size=100, device="cpu", quiet=True,
                                                     schedule="cosine_reset", restarts=tuple(at)), out=tmp_path / "fixed")
    fixed.fit()
    lrs = [[r["lr"] for r in MetricsLog(tmp_path / d).rows()] for d in ("lipgrow", "fixed")]
    assert lrs[0] == lrs[1] and len(set(lrs[0])) == 4
    steps = [e + i / fixed.loader.steps for e in range(4) for i in range(fixed.loader.steps)]
    assert [grown.schedule(t) for t in steps] == [fixed.schedule(t) for t in steps]


@pytest.mark.parametrize("make", [lambda: Multilevel(), lambda: LipGrow(lip_window=1, reserve=1)], ids=["multilevel", "lipgrow"])
def test_methods_reach_the_final_depth_and_resume_after_growth(small, tmp_path, make):
    full = _run(small, make(), tmp_path / "full")
    assert full.model.spec.blocks == (2, 2, 2) and full.model.spec.h == ((0.5, 0.5),) * 3
    rows = MetricsLog(tmp_path / "full").rows()
    events = [e for r in rows for e in r["events"]]
    assert events[0]["kind"] == "start" and events[0]["text"].startswith("start 1-1-1")
    assert any(e["kind"] == "grow" and (e["from"], e["to"]) == ("1-1-1", "2-2-2") for e in events)
    grow_epoch = next(r["epoch"] for r in rows if any(e["kind"] == "grow" for e in r["events"]))
    assert rows[0]["blocks"] == "1-1-1" and rows[-1]["blocks"] == "2-2-2"
    assert full.schedule.restarts == [float(grow_epoch)]  # the cosine restarts at the growth
    # multilevel's cycles end at the next growth (all known at the start); lipgrow's anneal to the end
    assert full.schedule.kind == ("cosine_reset" if isinstance(full.method, LipGrow) else "cosine_restarts")

    _run(small, make(), tmp_path / "part", until=grow_epoch)  # stopped right after the growth
    assert load_checkpoint(tmp_path / "part" / CHECKPOINT)["spec"]["blocks"] == [2, 2, 2]
    resumed = _run(small, make(), tmp_path / "part", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.schedule.restarts == full.schedule.restarts
    if isinstance(full.method, LipGrow):  # the scores too: cold power iterations draw from the restored RNG
        assert [r["lip_score"] for r in rows] == [r["lip_score"] for r in MetricsLog(tmp_path / "part").rows()]
    what = lambda m: [(g["epoch"], g["from"], g["to"], g["why"]) for g in m.grows]  # noqa: E731 (seconds differ)
    assert what(resumed.method) == what(full.method) and len(full.method.grows) == 1 and resumed.method.grows_left == 0


@pytest.mark.parametrize("name,options", [("multilevel", {}), ("lipgrow", {"lip_window": 1, "reserve": 1}),
                                          ("compound", {})])
def test_no_lr_restarts_keeps_the_runs_schedule_through_the_growths(small, tmp_path, name, options):
    """--no-lr-restarts: the growths happen and the lr follows the run's one cosine, with no jump back to its peak."""
    t = _run(small, build_method(name, lr_restarts=False, **options), tmp_path / name, epochs=4)
    rows = MetricsLog(tmp_path / name).rows()
    assert any(e["kind"] == "grow" for r in rows for e in r["events"]) and t.model.spec.blocks == (2, 2, 2)
    assert t.schedule.kind == "cosine" and t.schedule.restarts == []
    lrs = [r["lr"] for r in rows]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    start = rows[0]["events"][0]
    assert start["lr_restarts"] is False and "not restarted" in start["text"] and "no lr restarts" in t.method.describe()
    with pytest.raises(ResgrowError, match="--no-lr-restarts"):  # a step schedule has no cosine to restart
        build_method(name, **options).prepare(FINAL, 4, "step")
    build_method(name, lr_restarts=False, **options).prepare(FINAL, 4, "step")  # left as it is: any schedule goes


def test_partial_growth_reaches_a_depth_no_doubling_reaches_and_resumes_between_growths(small, tmp_path):
    final = ArchSpec("basic", (3, 2, 1), (8, 16, 32), stem_width=8)  # no start doubles up to it

    def run(out, until=None, resume=False):
        torch.manual_seed(0)
        t = Trainer(ResNet(final), small, TrainConfig(epochs=3, batch_size=100, device="cpu", quiet=True),
                    method=Multilevel(grow_at=[1, 2], partial_growth=True), out=out, resume=resume)
        t.fit(until=until)
        return t

    full = run(tmp_path / "full")
    rows = MetricsLog(tmp_path / "full").rows()
    assert [r["blocks"] for r in rows] == ["1-1-1", "2-2-1", "3-2-1"]
    assert rows[0]["events"][0]["text"].startswith("start 1-1-1 (final 3-2-1, partial growth: 2-2-1 -> 3-2-1)")
    assert full.model.spec.h == ((0.5, 0.25, 0.25), (0.5, 0.5), (1.0,))
    run(tmp_path / "part", until=1)  # stopped after the first growth: the second must still reach 3-2-1
    resumed = run(tmp_path / "part", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert resumed.model.spec == full.model.spec and all(torch.equal(a[k], b[k]) for k in a)


def test_lipgrow_logs_score_and_its_cost(small, tmp_path, capsys):
    _run(small, LipGrow(lip_window=1, reserve=1), tmp_path / "r", quiet=False)
    rows = MetricsLog(tmp_path / "r").rows()
    # the progress line shows the score, and the ratio against the threshold while a grow is to come
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch")]
    assert f"Lipschitz {rows[0]['lip_score']:.4g}, smoothed ratio 1.000 (grows > 1.4)  [start" in said[0], said
    assert said[-1].endswith(f"Lipschitz {rows[-1]['lip_score']:.4g}, smoothed ratio 1.000"), said
    m = LipGrow(lip_window=3)
    m.trigger = LipGrowTrigger(1, 40, 1.4, 3, 5)
    assert m.progress({"lip_score": 9.34567, "lip_ratio": None}) == "Lipschitz 9.346, no ratio before 3 scores (grows > 1.4)"
    assert m.progress({}) == "" and Multilevel().progress(rows[0]) == ""
    assert all(r["lip_score"] > 0 and r["lip_seconds"] >= 0 and r["method_seconds"] >= r["lip_seconds"] for r in rows)
    # the meter's time is training time: each row's clock adds the epoch, the method and any size change
    for prev, r in zip([{"train_seconds": 0.0}] + rows, rows):
        added = r["train_seconds"] - prev["train_seconds"] - r["epoch_seconds"] - r["method_seconds"]
        assert added > -0.002 and (added < 0.002 or any(e["kind"] in ("grow", "start") for e in r["events"]))
    epochs = rows[-1]["epoch"]  # one doubling, reserve 1: the grow is forced after epoch epochs - 1 at the latest
    assert rows[0]["events"][0]["text"].endswith(f"grows when the smoothed ratio > 1.4, at the latest after epoch {epochs - 1}")
    with open(tmp_path / "r" / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[-4:] == ["lip_score", "lip_ratio", "lip_seconds", "events"]
    assert [float(r["lip_score"]) for r in table] == [r["lip_score"] for r in rows]


def test_spec_of_grown_model_builds_the_same_model():
    grown, _ = deepen(build("resnet20"), "interpolate")
    assert grown.spec == spec_for("resnet38").replace(h=((0.5,) * 6,) * 3)


def test_a_users_own_model_can_be_deepened():
    torch.manual_seed(0)
    spec = ArchSpec("bottleneck", (1, 2), (64, 128), h=((1.0,), (0.7, 0.3)), stem_width=32, shortcut="B", num_classes=5)
    model = randomize_bn(ResNet(spec)).eval()
    x = torch.randn(2, 3, 16, 16)
    same, _ = deepen(model, "identity")
    assert same.spec.blocks == (2, 4) and (same(x) - model(x)).abs().max() <= 1e-5
    halved, _ = deepen(model, "interpolate", stages=[1])
    # stage 1: the downsampling block (h 0.7) is kept, its partner copies the next block (h 0.3)
    assert halved.spec.h == ((1.0,), (0.35, 0.15, 0.15, 0.15))


def test_cli_growth_run(tmp_path, small_zip):
    from resgrow.cli import main

    out = tmp_path / "ml"
    argv = ["train", "--arch", "cifar_resnet14", "--data", str(small_zip), "--out", str(out), "--epochs", "3",
            "--batch-size", "50", "--device", "cpu", "--quiet", "--method", "multilevel", "--start-blocks", "1-1-1",
            "--grow-at", "2"]
    assert main(argv) == 0
    rows = MetricsLog(out).rows()
    assert [r["blocks"] for r in rows] == ["1-1-1", "1-1-1", "2-2-2"]
    assert rows[1]["events"] == [{"kind": "grow", "text": "grew 1-1-1 -> 2-2-2 (epoch 2)", "from": "1-1-1", "to": "2-2-2",
                                  "why": "epoch 2"}]
    assert rows[0]["events"] == [{"kind": "start", "text": "start 1-1-1 (final 2-2-2); grows at epoch 2",  # the plan
                                  "blocks": "1-1-1", "final": "2-2-2", "grow_at": [2]}]
    assert json.loads((out / "run.json").read_text())["method"].startswith("multilevel(start 1-1-1")
    assert json.loads((out / "run.json").read_text())["method"] == "multilevel(start 1-1-1, grow at [2])"
    bad = argv[:6] + [str(tmp_path / "bad")] + argv[7:-1]
    assert main(bad + ["1,2"]) == 2  # 2 epochs for 1 doubling
    assert not (tmp_path / "bad").exists()  # refused before data or run dir: the corrected command can use the same --out
    assert main(bad + ["2", "--stop-after", "1"]) == 0


def test_a_grown_run_with_folded_h_trains_bit_for_bit_like_autocast(small, monkeypatch):
    """Through the trainer and a growth (h 1 -> 1/2): the bf16 step with h folded in (the CUDA default) and
    plain bf16 autocast give the same run. The trainer uses autocast on CUDA only, so it is forced here."""
    import resgrow.train.trainer as trainer_mod
    from resgrow.train.step import StepRunner

    class CpuAmpRunner(StepRunner):
        def __init__(self, *a, amp=False, **k):
            super().__init__(*a, amp=True, **k)

    monkeypatch.setattr(trainer_mod, "StepRunner", CpuAmpRunner)
    runs = {}
    for bf16w in (False, True):
        torch.manual_seed(0)
        t = Trainer(ResNet(FINAL), small, TrainConfig(epochs=3, batch_size=100, device="cpu", quiet=True, bf16_weights=bf16w),
                    method=Multilevel(grow_at=[1]))
        rows = t.fit()
        runs[bf16w] = (t, [(r["train_loss"], r["test_acc"]) for r in rows])
    folded = runs[True][0].runner.bf16_copies.folded
    assert len(folded) == 6 and {b.h for _, b in folded} == {0.5}  # the grown net's blocks, all folded
    assert runs[False][0].runner.bf16_copies is None
    assert runs[True][1] == runs[False][1]
    a, b = runs[False][0].model.state_dict(), runs[True][0].model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
