"""`resgrow.grow.resize`: depth and width in one change, in either order, keeping what the depth mode keeps on
every family, with one parameter map that optimizer state, lr groups and the Lipschitz meter follow."""

import pytest
import torch

from resgrow.errors import ResgrowError
from resgrow.grow import compose_maps, deepen, resize, widen
from resgrow.measure.lipschitz import LipschitzMeter
from resgrow.models import build
from resgrow.train import carry_state

# family, deeper blocks (partial where doubling would make a big net), wider stage widths, input size
FAMILIES = [("resnet20", (6, 6, 6), (20, 38, 76), 32), ("preact_resnet20", (4, 6, 3), (20, 38, 76), 32),
            ("wrn16_4", (4, 4, 4), (80, 154, 308), 32), ("resnet18", (3, 4, 2, 2), (80, 154, 308, 616), 64),
            ("resnet50", (4, 5, 7, 3), (320, 616, 1232, 2464), 64)]


def _net(name, size):
    """A float64 net whose BN statistics are not the initial ones, in eval mode."""
    torch.manual_seed(1)
    model = build(name, 10).double()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, size, size, dtype=torch.float64))
    return model.eval()


def _rel(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("order", ["depth_first", "width_first"])
@pytest.mark.parametrize("name,blocks,widths,size", FAMILIES)
def test_resize_keeps_what_its_depth_mode_keeps_in_either_order(name, blocks, widths, size, order):
    """identity: the function itself; interpolate: the function of the deepened net alone (a finer ODE step)."""
    model = _net(name, size)
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    same, _ = resize(model, blocks, widths, mode="identity", order=order)
    assert same.spec.blocks == blocks and same.spec.widths == widths and not same.training
    interp, _ = resize(model, blocks, widths, order=order)
    with torch.no_grad():
        assert _rel(model(x), same(x)) < 1e-10
        assert _rel(deepen(model, "interpolate", blocks=blocks)[0](x), interp(x)) < 1e-10
        assert _rel(model(x), interp(x)) > 1e-6  # interpolation is not the identity: the check above can fail


def test_the_map_carries_a_copied_blocks_momentum_into_its_old_channels_and_starts_new_units_at_zero():
    model = build("resnet20", 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        opt.state[p]["momentum_buffer"] = torch.randn_like(p)
    for order in ("depth_first", "width_first"):
        new, pmap = resize(model, (6, 6, 6), (20, 38, 76), order=order)
        new_opt = torch.optim.SGD(new.parameters(), lr=0.1, momentum=0.9)
        got = carry_state(model, opt, new, new_opt, pmap)
        assert got["stages.0.blocks.1.conv1.weight"] == "stages.0.blocks.0.conv1.weight"  # block 0's partner
        old = opt.state[model.stages[0].blocks[0].conv1.weight]["momentum_buffer"]
        for block in (0, 1):  # the block and its copy: old channels carried, new ones at zero
            buf = new_opt.state[new.stages[0].blocks[block].conv1.weight]["momentum_buffer"]
            assert torch.equal(buf[:16, :16], old) and not buf[16:].any() and not buf[:, 16:].any()
        assert all(callable(src[1].gather) for src in pmap.values() if not isinstance(src, str))


def test_a_copy_repeats_its_sources_new_channels_only_when_widened_first():
    model = build("resnet20", 10)
    for order, shared in (("width_first", True), ("depth_first", False)):
        torch.manual_seed(0)
        new, _ = resize(model, (6, 6, 6), (20, 38, 76), order=order)
        a, b = new.stages[0].blocks[0].conv1.weight, new.stages[0].blocks[1].conv1.weight
        assert torch.equal(a[16:], b[16:]) == shared


def test_fresh_parameters_are_left_out_of_the_map_whichever_runs_first():
    model = build("resnet20", 10)
    for order in ("depth_first", "width_first"):
        new, pmap = resize(model, (4, 4, 4), (20, 38, 76), mode="identity", order=order)
        # each stage's block 1 gets a partner (block 2) whose residual branch starts at zero
        zeroed = {f"stages.{s}.blocks.2.{n}" for s in range(3) for n in new.stages[s].blocks[2].branch_end}
        assert {n for n, _ in new.named_parameters()} - set(pmap) == zeroed
        # deepened first, the zeroed BN is then widened: its new channels start as vt's (weight 1), pairs that cancel
        assert all(new.get_parameter(n)[:16].abs().sum() == 0 for n in zeroed if n.endswith("bn2.weight"))
        assert (order == "width_first") == all(not new.get_parameter(n).any() for n in zeroed)


def test_composed_maps_chain_names_transforms_and_their_gather():
    def double(t):
        return t * 2

    double.gather = lambda t: t + 100
    first = {"m.a": "a", "m.b": ("b", double)}
    second = {"n.a": ("m.a", double), "n.b": "m.b", "n.c": ("m.c", double)}  # m.c: fresh in the middle
    out = compose_maps(first, second)
    assert set(out) == {"n.a", "n.b"} and out["n.a"][0] == "a" and out["n.b"][0] == "b"
    assert out["n.b"][1](torch.ones(1)).item() == 2 and out["n.a"][1].gather(torch.zeros(1)).item() == 100
    chained = compose_maps(first, {"n.b": ("m.b", double)})["n.b"][1]
    assert chained(torch.ones(1)).item() == 4 and chained.gather(torch.zeros(1)).item() == 200


def test_the_lipschitz_meter_follows_copies_and_starts_widened_convs_cold():
    model = build("resnet20", 10)
    meter = LipschitzMeter()
    meter.score(model)
    deeper, pmap = resize(model, (6, 6, 6), None)
    meter.follow(pmap)
    assert torch.equal(meter.vectors["stages.0.blocks.1.conv1.weight"], meter.vectors["stages.0.blocks.0.conv1.weight"])
    wider, pmap = resize(deeper, None, (20, 38, 76))
    meter.follow(pmap)
    before = dict(meter.vectors)
    meter.score(wider)  # old-shaped vectors do not fit the widened convs: drawn again, not reused
    assert all(meter.vectors[k].shape[1] == wider.get_parameter(k).shape[1] for k in before)


@pytest.mark.parametrize("args,match", [
    (dict(), "changes nothing"),
    (dict(blocks=(3, 3, 3), widths=(16, 32, 64)), "changes nothing"),
    (dict(blocks=(7, 3, 3)), "between its blocks and twice them"),
    (dict(widths=(21, 38, 76)), "odd number"),
    (dict(widths=(20, 38, 76), order="sideways"), "and order depth_first"),
])
def test_bad_resizes_are_one_clear_error(args, match):
    with pytest.raises(ResgrowError, match=match):
        resize(build("resnet20", 10), **args)
    with pytest.raises(ResgrowError, match="only resgrow ResNets"):
        resize(torch.nn.Linear(2, 2), (2,))


def test_resize_equals_the_two_operators_in_a_row():
    model = _net("resnet20", 32)
    torch.manual_seed(3)
    composed, _ = resize(model, (6, 6, 6), (20, 38, 76))
    torch.manual_seed(3)
    by_hand, _ = widen(deepen(model, blocks=(6, 6, 6))[0], (20, 38, 76))
    a, b = composed.state_dict(), by_hand.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
