"""MG/OPT's transfer operators between a fine ResNet and its coarse level (resgrow.grow.levels)."""

import pytest
import torch
import torch.nn.functional as F

from resgrow.errors import ResgrowError
from resgrow.grow import deepen
from resgrow.grow.levels import (
    coarse_spec,
    corrected_loss,
    prolong,
    prolongation,
    restrict,
    restrict_gradient,
    restriction,
    tau_correction,
)
from resgrow.models import ArchSpec, ResNet

FINE = ArchSpec("basic", (4, 6), (8, 16), stem_width=4)  # small; every stage's first block changes the shape


def _fine(seed=0):
    torch.manual_seed(seed)
    return ResNet(FINE).double()


def _names(model):
    return [n for n, _ in model.named_parameters()]


def test_the_coarse_level_has_half_the_blocks_and_twice_the_step():
    spec = coarse_spec(FINE.replace(h=((0.5,) * 4, (0.25,) * 6)))
    assert spec.blocks == (2, 3) and spec.h == ((1.0, 1.0), (0.5, 0.5, 0.5))
    with pytest.raises(ResgrowError, match="cannot be halved"):
        coarse_spec(FINE.replace(blocks=(3, 6)))


@pytest.mark.parametrize("kind", ["constant", "linear"])
def test_injection_after_prolongation_is_the_identity(kind):
    assert all(torch.equal(r @ p, torch.eye(r.shape[0], dtype=torch.float64))
               for r, p in zip(restriction(FINE, "injection"), prolongation(FINE, kind)))
    coarse = restrict(_fine())
    values = {n: p.detach() for n, p in coarse.named_parameters()}
    back = restrict(_prolonged_model(values, kind))
    assert all(torch.equal(values[n], p) for n, p in back.named_parameters())


def _prolonged_model(values, kind):
    fine = _fine(1)
    with torch.no_grad():
        for n, v in prolong(values, FINE, _names(fine), kind).items():
            fine.get_parameter(n).copy_(v)
    return fine


def test_constant_prolongation_lays_blocks_out_as_depth_doubling_does():
    coarse = restrict(_fine())
    deeper, _ = deepen(coarse, "duplicate")
    values = {n: p.detach() for n, p in coarse.named_parameters()}
    prolonged = prolong(values, FINE, _names(deeper), "constant")
    assert all(torch.equal(prolonged[n], p) for n, p in deeper.named_parameters())
    full = restriction(FINE, "full")[1]
    assert full[2].tolist() == [0, 0, 0, 0.25, 0.5, 0.25] and full.sum(1).tolist() == [1, 1, 1]


@pytest.mark.parametrize("kind", ["constant", "linear"])
def test_gradient_restriction_is_the_adjoint_of_prolongation(kind):
    torch.manual_seed(2)
    fine, coarse = _fine(), restrict(_fine())
    g = {n: torch.randn_like(p) for n, p in fine.named_parameters()}
    d = {n: torch.randn_like(p) for n, p in coarse.named_parameters()}
    pd = prolong(d, FINE, _names(fine), kind)
    rg = restrict_gradient(g, FINE, _names(coarse), kind)
    lhs = sum((g[n] * pd[n]).sum() for n in g)
    rhs = sum((rg[n] * d[n]).sum() for n in d)
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)  # a coarse descent direction prolongs to a fine one


@pytest.mark.parametrize("kind", ["injection", "full"])
def test_the_tau_corrected_coarse_gradient_at_the_restricted_point_is_the_restricted_fine_gradient(kind):
    fine = _fine()
    x, y = torch.randn(8, 3, 16, 16, dtype=torch.float64), torch.randint(0, 10, (8,))
    F.cross_entropy(fine(x), y).backward()
    coarse = restrict(fine, kind)
    rg = restrict_gradient({n: p.grad for n, p in fine.named_parameters()}, FINE, _names(coarse))
    F.cross_entropy(coarse(x), y).backward()
    v = tau_correction({n: p.grad.clone() for n, p in coarse.named_parameters()}, rg)
    coarse.zero_grad()
    corrected_loss(F.cross_entropy(coarse(x), y), coarse, v).backward()
    for n, p in coarse.named_parameters():
        assert torch.allclose(p.grad, rg[n], rtol=0, atol=1e-6), n


def test_restricting_into_a_coarse_net_keeps_its_own_statistics():
    fine = _fine()
    coarse = restrict(fine)
    with torch.no_grad():
        coarse(torch.randn(4, 3, 16, 16, dtype=torch.float64))  # the coarse level's own statistics move
    stats = {n: b.clone() for n, b in coarse.named_buffers()}
    restrict(_fine(5), "full", into=coarse)
    assert all(torch.equal(stats[n], b) for n, b in coarse.named_buffers())
    with pytest.raises(ResgrowError, match="needs a resgrow ResNet"):
        restrict(torch.nn.Linear(2, 2))
