"""--method mgopt: a V-cycle's correction is a descent direction that satisfies Armijo, levels keep their own
statistics, the work is counted, a run resumes exactly, and bad inputs are one line before any data."""

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import cfg, weights
from resgrow.cli import main
from resgrow.methods import build_method
from resgrow.models import ArchSpec, ResNet
from resgrow.train import Trainer
from resgrow.train.step import MethodStep

SPEC = ArchSpec("basic", (4, 4, 4), (8, 16, 32), stem_width=8)


class Step:
    """What the trainer hands a method's train_step, on one fixed batch."""

    def __init__(self, model, x, y):
        from resgrow.train.distributed import Ranks

        self.model, self.lr, self.batch, self.ranks = model, 0.05, (x, y), Ranks()
        self.optimizer = self.new_optimizer(model.parameters())
        self.epoch, self.epochs = 0, 1
        self.recorded = []

    def next_batch(self):
        return self.batch

    new_optimizer, set_lr = MethodStep.new_optimizer, MethodStep.set_lr

    def _factory(self, params, lr):
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)

    def autocast(self):
        return contextlib.nullcontext()

    def record(self, loss, out, y):
        self.recorded.append(float(loss))


def _setup(**options):
    torch.manual_seed(0)
    model = ResNet(SPEC).double()
    method = build_method("mgopt", **options)
    method._build(model)
    x, y = torch.randn(16, 3, 16, 16, dtype=torch.float64), torch.randint(0, 10, (16,))
    return model, method, Step(model, x, y)


def _uphill(method):
    """Coarse steps uphill, so that the prolonged change ascends and the correction is refused."""
    real = method._sgd

    def ascend(levels, opts, level, x, y, v, step_):
        if level:
            for group in opts[level].param_groups:
                group["lr"] = -abs(group["lr"])
        return real(levels, opts, level, x, y, v, step_)

    method._sgd = ascend


def test_an_accepted_correction_descends_and_satisfies_armijo_on_its_batch():
    model, method, step = _setup(nu_pre=0, nu_post=0)
    for _ in range(3):
        method.train_step(step)
        last = method.last
        assert last["slope"] < 0 and last["accepted"], last
        assert last["f_new"] <= last["f0"] + 1e-4 * last["alpha"] * last["slope"]
    assert step.recorded and step.recorded[-1] == pytest.approx(last["f_new"], rel=1e-9)


def test_each_level_keeps_its_own_statistics():
    model, method, step = _setup(nu_pre=0, nu_post=0)
    method.train_step(step)  # the coarse optimizer exists from here
    fine_stats = {n: b.clone() for n, b in model.named_buffers()}
    coarse_stats = {n: b.clone() for n, b in method.coarse[0].named_buffers()}
    x, y = step.batch
    method._cycle([model, *method.coarse], [step.optimizer, *method.optimizers], 0, x, y, None, step)
    assert all(torch.equal(fine_stats[n], b) for n, b in model.named_buffers())  # gradients, line search: frozen
    assert any(not torch.equal(coarse_stats[n], b) for n, b in method.coarse[0].named_buffers() if "running" in n)


def test_without_fine_steps_the_fine_statistics_still_follow_the_fine_net():
    model, method, step = _setup(nu_pre=0, nu_post=0)
    before = {n: b.clone() for n, b in model.named_buffers() if "running_mean" in n}
    method.train_step(step)
    assert all(not torch.equal(before[n], b) for n, b in model.named_buffers() if "running_mean" in n)


def test_the_work_of_a_step_is_counted_in_fine_gradient_equivalents():
    model, method, step = _setup(nu_pre=1, nu_post=1, nu_c=3, line_search="fixed")
    coarse = method.cost[1]
    assert 0.4 < coarse < 0.7  # half the blocks: a little over half the FLOPs (stem and head are carried)
    method.train_step(step)
    assert method.work == pytest.approx(2 + 1 + coarse + 3 * coarse)  # 2 fine steps, 2 gradients, 3 coarse steps


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_run_resumes_exactly_mid_run(small, tmp_path, optimizer):
    def run(out, resume=False):  # the coarse levels' optimizer state (AdamW's moments and counts too) comes back
        torch.manual_seed(0)
        return Trainer(ResNet(SPEC), small, cfg(epochs=2, batch_size=50, optimizer=optimizer, lr=0.1 if optimizer ==
                                                "sgd" else 1e-3), build_method("mgopt", mg_every=2), out=out,
                       resume=resume)

    full = run(tmp_path / "full")
    rows = full.fit()
    assert rows[-1]["grad_equivalents"] > 0 and 0 <= rows[-1]["accepted"] <= 1
    run(tmp_path / "part").fit(until=1)
    resumed = run(tmp_path / "part", resume=True)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca, cb = full.method.coarse[0].state_dict(), resumed.method.coarse[0].state_dict()
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
    sa, sb = (r.method.state_dict()["coarse_state"][0] for r in (full, resumed))
    assert {k for s in sa for k in s} == ({"momentum_buffer"} if optimizer == "sgd" else {"step", "exp_avg", "exp_avg_sq"})
    assert all(torch.equal(x[k], y[k]) for x, y in zip(sa, sb, strict=True) for k in x)


def test_a_checkpoint_with_the_coarse_momentum_alone_still_resumes():
    """Checkpoints written before the whole coarse state was kept hold SGD's momentum per parameter (None: none)."""
    model, method, step = _setup(nu_pre=0, nu_post=0, line_search="fixed")
    method.train_step(step)
    state = method.state_dict()
    bufs = [s.get("momentum_buffer") for s in state.pop("coarse_state")[0]]
    bufs[0] = None
    old = build_method("mgopt", nu_pre=0, nu_post=0, line_search="fixed")
    old.load_state_dict({**state, "momentum": [bufs]})
    old.coarse = method.coarse  # the trainer loads the coarse weights; the same modules here
    old.optimizers = [step.new_optimizer(m.parameters()) for m in old.coarse]
    old._restore_state()
    params = list(old.coarse[0].parameters())
    assert "momentum_buffer" not in old.optimizers[0].state[params[0]]
    assert all(torch.equal(old.optimizers[0].state[p]["momentum_buffer"], b) for p, b in zip(params[1:], bufs[1:]))


@pytest.mark.parametrize("args,words", [
    (["--arch", "resnet20"], "cannot be halved"),
    (["--arch", "resnet74", "--levels", "4"], "cannot be halved"),
    (["--arch", "resnet74", "--restriction", "average"], "unknown --restriction 'average'"),
    (["--arch", "resnet74", "--nu-c", "0"], "--nu-c >= 1"),
    (["--arch", "resnet74", "--line-search", "best", "--alphas", "1,-1"], "positive --alphas"),
    (["--arch", "resnet74", "--mg-until", "0"], "--mg-until in (0, 1]"),
    (["--arch", "resnet74", "--epochs", "4", "--levels", "3", "--nested-epochs", "2"], "leaves no epoch"),
    (["--arch", "resnet74", "--shared-step"], "give --nu-pre 0, not 1"),
])
def test_bad_mgopt_options_are_one_line_before_any_data_is_read(capsys, tmp_path, args, words):
    rc = main(["train", "--data", str(tmp_path / "no-such-data.zip"), "--out", str(tmp_path / "r"), "--method", "mgopt",
               "--device", "cpu", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err


def test_a_correction_that_does_not_descend_is_refused_and_the_fine_weights_stay():
    model, method, step = _setup(nu_pre=0, nu_post=0, line_search="fixed")
    _uphill(method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.train_step(step)
    assert method.last["slope"] > 0 and not method.last["accepted"]
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_a_shared_step_moves_the_fine_net_by_sgds_step_from_the_cycles_own_gradient():
    model, method, step = _setup(nu_pre=0, nu_post=0, nu_c=2, line_search="fixed", shared_step=True)
    twin = copy.deepcopy(model)
    twin_opt = step.new_optimizer(twin.parameters())
    _uphill(method)
    method.train_step(step)
    assert method.last["slope"] > 0 and not method.last["accepted"]  # so the step alone moved the fine net
    x, y = step.batch
    loss = F.cross_entropy(twin(x), y)
    loss.backward()
    twin_opt.step()
    a, b = model.state_dict(), twin.state_dict()  # weights and BN statistics: one SGD step's
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert step.recorded == [float(loss.detach())]  # the step's loss, from its own forward pass: no extra one
    assert method.work == pytest.approx(1 + 3 * method.cost[1])  # one fine gradient, the coarse one, 2 coarse steps


def test_a_shared_steps_line_search_starts_from_the_stepped_weights():
    model, method, step = _setup(nu_pre=0, nu_post=0, nu_c=1, line_search="best", shared_step=True)
    seen = []
    real = method._value

    def value(model_, level, x, y, v, step_):
        seen.append({n: p.detach().clone() for n, p in model_.named_parameters()})
        return real(model_, level, x, y, v, step_)

    method._value = value
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.train_step(step)
    assert not all(torch.equal(start[n], seen[0][n]) for n in start)  # the base value is taken after the step
    assert len(seen) == 1 + 4  # the base, then the four alphas
    assert method.work == pytest.approx(1 + 2 * method.cost[1] + 5 * method.cost[0] / 3)
    assert float(method.last["f_new"]) < float(method.last["f0"]) or not bool(method.last["accepted"])


def test_armijo_halves_a_step_that_is_too_long_and_refuses_one_that_never_fits():
    model, method, step = _setup(nu_pre=0, nu_post=0, alpha=1e4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.train_step(step)
    last = method.last
    if last["accepted"]:
        assert last["alpha"] < 1e4 and last["f_new"] <= last["f0"] + 1e-4 * last["alpha"] * last["slope"]
    else:
        assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_best_of_the_alphas_is_taken_only_if_it_lowers_the_objective():
    model, method, step = _setup(nu_pre=0, nu_post=0, line_search="best", alphas=(1.0, 0.5, 0.25))
    for _ in range(3):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        method.train_step(step)
        last = method.last
        values = last["values"]
        assert float(last["f_new"]) == float(values.min())
        if bool(last["accepted"]):
            assert float(values.min()) < float(last["f0"]) and float(last["slope"]) < 0
            assert float(last["alpha"]) == (1.0, 0.5, 0.25)[int(values.argmin())]
        else:
            assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert method.accepted >= 1  # the first correction of a fresh net on its batch descends


def test_the_best_of_the_alphas_is_chosen_without_reading_a_value_on_the_host(monkeypatch):
    model, method, step = _setup(nu_pre=0, nu_post=0, line_search="best")
    real = method._take_best

    def no_host_reads(*args):
        def refuse(*_a, **_k):
            raise AssertionError("a value was read on the host")

        with monkeypatch.context() as m:
            for name in ("item", "__float__", "__bool__", "__int__", "tolist"):
                m.setattr(torch.Tensor, name, refuse)
            real(*args)

    method._take_best = no_host_reads
    method.train_step(step)
    assert "values" in method.last and float(method.last["accepted"]) in (0.0, 1.0)


def test_reset_momentum_gives_the_coarse_levels_a_fresh_momentum_at_every_cycle():
    def fine_after_two(reset, clear_by_hand):
        model, method, step = _setup(nu_pre=0, nu_post=0, line_search="fixed", alpha=0.5, reset_momentum=reset)
        method.train_step(step)
        if clear_by_hand:
            for o in method.optimizers:
                o.state.clear()
        method.train_step(step)
        return [p.detach().clone() for p in model.parameters()]

    reset, by_hand, kept = fine_after_two(True, False), fine_after_two(False, True), fine_after_two(False, False)
    assert all(torch.equal(a, b) for a, b in zip(reset, by_hand))
    assert not all(torch.equal(a, b) for a, b in zip(reset, kept))


def test_v_cycles_stop_after_mg_until_and_plain_steps_count_one_gradient(small):
    torch.manual_seed(0)
    rows = Trainer(ResNet(SPEC), small, cfg(epochs=2, batch_size=100),
                   build_method("mgopt", mg_until=0.5, line_search="fixed")).fit()
    steps = rows[0]["steps"]
    assert rows[0]["accepted"] is not None and rows[0]["grad_equivalents"] > 3 * steps
    assert rows[1]["accepted"] is None and rows[1]["grad_equivalents"] == pytest.approx(steps)


def test_nested_iteration_trains_the_coarsest_level_first_then_cycles_on_the_fine_net(small):
    torch.manual_seed(0)
    trainer = Trainer(ResNet(SPEC), small, cfg(epochs=3, batch_size=100),
                      build_method("mgopt", nested_epochs=1, line_search="fixed"))
    rows = trainer.fit()
    assert [r["blocks"] for r in rows] == ["2-2-2", "4-4-4", "4-4-4"]
    assert rows[0]["accepted"] is None and rows[1]["accepted"] is not None
    assert rows[0]["grad_equivalents"] == pytest.approx(rows[0]["steps"] * trainer.method.cost[1], rel=1e-3)
    assert [e["kind"] for e in rows[0]["events"]] == ["start", "grow"]
    assert trainer.model.spec == SPEC and trainer.method.coarse[0].spec.blocks == (2, 2, 2)


def test_a_nested_run_resumes_exactly_across_the_prolongation(small, tmp_path):
    def run(out, resume=False):
        torch.manual_seed(0)
        return Trainer(ResNet(SPEC), small, cfg(epochs=2, batch_size=100),
                       build_method("mgopt", nested_epochs=1, line_search="best"), out=out, resume=resume)

    full = run(tmp_path / "full")
    full.fit()
    run(tmp_path / "part").fit(until=1)
    resumed = run(tmp_path / "part", resume=True)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.history[-1]["grad_equivalents"] == resumed.history[-1]["grad_equivalents"]


def test_prolonging_a_level_up_then_injecting_it_back_gives_the_level():
    from resgrow.grow.levels import restrict

    model, method, _ = _setup()
    coarse = method.coarse[0]
    method.level = 1
    finer = method._finer(coarse)
    back = restrict(finer, "injection")
    assert all(torch.equal(p, q) for p, q in zip(back.parameters(), coarse.parameters()))
