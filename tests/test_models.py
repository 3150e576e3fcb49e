import pytest
import torch

from conftest import TINY
from resgrow.errors import ResgrowError
from resgrow.measure import flops_per_image, param_count
from resgrow.models import ArchSpec, ResNet, build, list_models, spec_for, spec_of


@pytest.mark.parametrize("name,size,classes", [
    ("resnet20", 32, 10), ("preact_resnet20", 32, 10), ("wrn16_4", 32, 100), ("resnet18", 64, 10), ("resnet50", 64, 10),
])
def test_forward_shapes(name, size, classes):
    model = build(name, classes).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, classes)


# He et al. 2016 Table 6 (option A shortcuts), Zagoruyko & Komodakis 2016, torchvision for ImageNet nets.
@pytest.mark.parametrize("name,classes,expected", [
    ("resnet20", 10, 0.27e6), ("resnet56", 10, 0.85e6), ("resnet110", 10, 1.7e6),
    ("wrn16_4", 10, 2.7e6), ("wrn28_10", 10, 36.5e6), ("resnet18", 1000, 11.69e6), ("resnet50", 1000, 25.56e6),
])
def test_parameter_counts_match_papers(name, classes, expected):
    with torch.device("meta"):
        n = param_count(build(name, classes))
    assert abs(n - expected) / expected < 0.03, (name, n)


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet56", "wrn16_4", "resnet34", "resnet50", "preact_resnet122"])
def test_spec_round_trip(name):
    spec = spec_for(name)
    with torch.device("meta"):
        model = build(name)
    assert model.spec == spec == spec_of(model)
    assert ArchSpec.from_dict(spec.to_dict()) == spec
    with torch.device("meta"):
        again = ResNet(model.spec)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_spec_reflects_edited_model():
    model = ResNet(TINY)
    model.stages[1].blocks[0].h = 0.5
    assert model.spec.h == ((1.0,), (0.5,), (1.0,))


@pytest.mark.parametrize("block", ["basic", "preact", "bottleneck"])
def test_h_scales_the_residual_branch(block):
    torch.manual_seed(0)
    spec = ArchSpec(block, (2,), (32,), stem_width=32, shortcut="B")
    blk = ResNet(spec).stages[0].blocks[1].eval()  # not downsampling: the shortcut is the identity
    for m in blk.modules():  # non-trivial BN so that the branch is not near zero
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 32, 8, 8)
    out = {}
    for h in (0.0, 0.5, 1.0):
        blk.h = h
        out[h] = blk(x)
    if block == "preact":  # x + h F(x): exactly linear in h
        torch.testing.assert_close(out[0.0], x)
        torch.testing.assert_close(out[0.5] - x, 0.5 * (out[1.0] - x))
    else:  # relu(x + h F(x))
        torch.testing.assert_close(out[0.0], torch.relu(x))
        assert not torch.allclose(out[0.5], out[1.0])
    assert (out[1.0] - out[0.5]).abs().max() > 1e-3


def test_registry_and_errors():
    assert {"resnet20", "resnet56", "resnet110", "wrn16_4", "wrn28_10", "resnet18", "resnet50"} <= set(list_models())
    assert spec_for("preact_resnet122").blocks == (20, 20, 20)
    assert spec_for("resnet74").depth == 74
    with pytest.raises(ResgrowError, match="unknown arch"):
        spec_for("resnet57")
    with pytest.raises(ResgrowError, match="6n\\+2"):
        spec_for("preact_resnet21")
    with pytest.raises(ResgrowError, match="one step size per block"):
        ArchSpec("basic", (2, 2), (16, 32), h=((1.0,), (1.0, 1.0)))
    with pytest.raises(ResgrowError, match="block type"):
        ArchSpec("dense", (1,), (16,))


def test_flops_per_image():
    # ResNet-20: about 41M multiply-adds (He et al. 2016), i.e. about 82M FLOPs.
    assert abs(flops_per_image(spec_for("resnet20")) - 82e6) / 82e6 < 0.03
    assert flops_per_image(spec_for("resnet56")) > 3 * flops_per_image(spec_for("resnet20"))


@pytest.mark.parametrize("spec,size", [
    (spec_for("resnet56"), 32), (spec_for("preact_resnet20"), 32), (spec_for("wrn16_4", 100), 32),
    (spec_for("resnet50"), 64), (spec_for("resnet18"), 32),  # an ImageNet net on CIFAR-size images: 1x1 maps
    (spec_for("resnet74").replace(blocks=(3, 6, 12)), (32, 24)),
])
def test_flops_and_params_counted_per_block_shape_equal_the_whole_net(spec, size):
    """flops_per_image and spec_params count nets of 1-2 blocks per stage and extrapolate (fast for
    resnet1202, and after every growth); they must equal the counts over the whole net exactly."""
    from resgrow.measure.flops import _count, spec_params

    whole = _count(spec, size)
    assert whole > 0 and flops_per_image(spec, size) == whole
    assert spec_params(spec) == param_count(ResNet(spec))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_without_counter_matches_torch(momentum):
    from resgrow.models.layers import BatchNorm2d

    torch.manual_seed(0)
    ours, ref = BatchNorm2d(4, momentum=momentum), torch.nn.BatchNorm2d(4, momentum=momentum)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2), ref.bias.uniform_(-1, 1)
    ours.load_state_dict(ref.state_dict())
    for _ in range(3):
        x = torch.randn(8, 4, 5, 5) * 3 + 1
        assert torch.equal(ours(x), ref(x))
    ours.eval(), ref.eval()
    assert torch.equal(ours(x), ref(x))
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for k in ("running_mean", "running_var"):
        assert torch.equal(ours.state_dict()[k], ref.state_dict()[k])
    # the counter only moves where torch needs it (momentum=None: cumulative average)
    assert int(ours.num_batches_tracked) == (3 if momentum is None else 0)


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet20", "wrn16_4", "resnet18", "resnet50"])
@pytest.mark.parametrize("size", [32, (40, 24)])
def test_flops_counted_from_layer_shapes_equal_torchs_flop_counter(name, size):
    from torch.utils.flop_counter import FlopCounterMode

    from resgrow.measure.flops import _count
    from resgrow.models.registry import spec_for

    spec = spec_for(name)
    with torch.device("meta"):
        model = ResNet(spec).eval()
        x = torch.empty(1, 3, *((size, size) if isinstance(size, int) else size))
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert _count(spec, size) == counter.get_total_flops()
