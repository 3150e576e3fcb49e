"""What a method may shape in the training step: parameter groups with lr scales, its own objective, modules
of its own beside the model. Each is kept across a resume, bit for bit on CPU."""

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import cfg, tiny, weights
from resgrow.errors import ResgrowError
from resgrow.methods import Method
from resgrow.methods.base import GroupedLr, OwnModules, OwnObjective, ParamGroup
from resgrow.train import Trainer, load_checkpoint
from resgrow.train.groups import LrGroups


class HeadSlower(Method, GroupedLr):
    """Two groups: the classifier at `head` times the lr, the rest at 1; after epoch 1 the head's scale halves."""

    name = "head_slower"

    def __init__(self, head=0.0):
        self.head, self.seen = head, []

    def param_groups(self, model):
        names = [n for n, _ in model.named_parameters()]
        return [ParamGroup("head", [n for n in names if n.startswith("fc.")], self.head),
                ParamGroup("body", [n for n in names if not n.startswith("fc.")])]

    def on_epoch_end(self, ctx):
        self.seen.append(dict(ctx.lr_scales))
        if ctx.epoch == 1:
            ctx.set_lr_scales({"head": ctx.lr_scales["head"] / 2})


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_group_at_scale_zero_does_not_move_and_the_others_train(mini):
    model = tiny()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, mini, cfg(epochs=2), HeadSlower(0.0))
    trainer.fit()
    after = weights(trainer)
    assert all(torch.equal(after[k], start[k]) for k in after if k.startswith("fc."))  # lr 0: no step, no decay
    assert not torch.equal(after["stem.0.weight"], start["stem.0.weight"])
    assert [p["lr"] for p in trainer.optimizer.param_groups] == [0.0, trainer.schedule(2 - 1 / trainer.loader.steps)]


def test_scales_change_between_steps_and_a_resume_keeps_them(small, tmp_path):
    method = HeadSlower(0.5)
    full = Trainer(tiny(), small, cfg(), method, out=tmp_path / "full")
    full.fit()
    assert method.seen == [{"head": 0.5, "body": 1.0}, {"head": 0.25, "body": 1.0}, {"head": 0.25, "body": 1.0}]
    lr = full.schedule(3 - 1 / full.loader.steps)  # the last step's
    assert [p["lr"] for p in full.optimizer.param_groups] == [lr * 0.25, lr]
    Trainer(tiny(), small, cfg(), HeadSlower(0.5), out=tmp_path / "part").fit(until=2)
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["lr_scales"] == {"head": 0.25, "body": 1.0}
    resumed = Trainer(tiny(seed=7), small, cfg(), HeadSlower(0.5), out=tmp_path / "part", resume=True)
    resumed.fit()
    assert _same(weights(full), weights(resumed))


def test_groups_that_miss_or_repeat_a_parameter_are_one_clear_error(mini):
    class Bad(Method, GroupedLr):
        name = "bad"

        def param_groups(self, model):
            names = [n for n, _ in model.named_parameters()]
            return [ParamGroup("a", names[:-1]), ParamGroup("b", names[:1])]

    with pytest.raises(ResgrowError, match="every parameter once.*is in 2 groups.*is in no group"):
        Trainer(tiny(), mini, cfg(), Bad())


def test_on_the_captured_path_each_groups_lr_is_computed_from_device_tensors():
    """What the CUDA-graph step runs: one multiply from the schedule's lr tensor and the scales, read by SGD;
    a new scale is a copy into the scales tensor, which the same (captured) step then reads."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    groups = LrGroups(torch.device("cpu"), graphs=True)
    lr = torch.tensor(0.1)
    parts = groups.optimizer_groups(model, [ParamGroup("a", ["0.weight", "0.bias"], 0.5),
                                            ParamGroup("b", ["1.weight", "1.bias"], 0.0)], lr)
    opt = torch.optim.SGD([{"params": ps, "lr": group_lr} for ps, group_lr in parts], lr=lr, momentum=0.9, foreach=True)
    groups.before_step(lr)
    assert [float(g["lr"]) for g in opt.param_groups] == [pytest.approx(0.05), 0.0]
    groups.update({"b": 2.0})
    lr.fill_(0.2)
    groups.before_step(lr)
    assert [float(g["lr"]) for g in opt.param_groups] == [pytest.approx(0.1), pytest.approx(0.4)]
    with pytest.raises(ResgrowError, match="no parameter group named c"):
        groups.update({"c": 1.0})


class Distil(Method, OwnModules, OwnObjective):
    """A frozen teacher (a module of the method's own) and its own objective: cross-entropy plus the KL
    divergence to the teacher's softened logits."""

    name = "distil"

    def __init__(self):
        self.teacher = None

    def on_run_start(self, ctx):
        self.teacher = copy.deepcopy(ctx.model).eval().requires_grad_(False)
        with torch.no_grad():
            for p in self.teacher.parameters():
                p.mul_(1.5)

    def modules(self):
        return {"teacher": self.teacher} if self.teacher is not None else {}

    def state_dict(self):
        return {"has_teacher": self.teacher is not None}

    def load_state_dict(self, state):
        if state["has_teacher"]:
            self.teacher = tiny().eval().requires_grad_(False)  # the shapes; the trainer loads the weights

    def objective(self):
        return self._loss

    def _loss(self, model, x, y):
        out = model(x)
        with torch.no_grad():
            soft = F.log_softmax(self.teacher(x).float() / 2, dim=1)
        kl = F.kl_div(F.log_softmax(out.float() / 2, dim=1), soft, log_target=True, reduction="batchmean")
        return F.cross_entropy(out, y) + kl, out


def test_a_methods_objective_and_module_train_and_resume_exactly(small, tmp_path):
    full = Trainer(tiny(), small, cfg(), Distil(), out=tmp_path / "full")
    full.fit()
    plain = Trainer(tiny(), small, cfg())
    plain.fit()
    assert not _same(weights(full), weights(plain))  # the objective is the method's, not cross-entropy alone
    teacher = full.method.teacher.state_dict()
    assert load_checkpoint(tmp_path / "full" / "checkpoint.pt")["modules"]["teacher"].keys() == teacher.keys()
    Trainer(tiny(), small, cfg(), Distil(), out=tmp_path / "part").fit(until=1)
    resumed = Trainer(tiny(seed=5), small, cfg(), Distil(), out=tmp_path / "part", resume=True)
    resumed.fit()
    assert _same(weights(full), weights(resumed))
    assert _same(resumed.method.teacher.state_dict(), teacher)  # frozen, and restored from the checkpoint


class FrozenRow(Method, GroupedLr):
    """Element groups inside a tensor: the classifier's first row at scale 0, every other element at 1."""

    name = "frozen_row"

    def slice_groups(self, model):
        from resgrow.methods.base import SliceGroups

        ids = torch.ones(model.head[2].weight.shape, dtype=torch.long)
        ids[0] = 0
        return SliceGroups(["frozen", "rest"], {"head.2.weight": ids}, [0.0, 1.0])


def test_element_groups_scale_the_gradient_of_their_elements_only(mini):
    model = tiny()
    start = model.head[2].weight.detach().clone()
    trainer = Trainer(model, mini, cfg(epochs=1, weight_decay=0.0), FrozenRow())  # no decay: only the gradient moves it
    trainer.fit()
    after = trainer.model.head[2].weight.detach()
    assert torch.equal(after[0], start[0]) and not torch.equal(after[1:], start[1:])
    assert trainer.runner.bf16_copies is None  # the bf16 weight copies would bypass the masks: off


def test_a_method_that_asks_for_nothing_more_trains_the_trainers_own_step(mini):
    """The fast path is the same for the baseline and for any method without a capability (multilevel only returns
    Changes): no objective, no lr-group hook inside the step, the bf16 weight copies, and a CUDA graph wherever the
    device has one. What a capability changes, it changes for its own method only."""
    from resgrow.methods import Multilevel
    from resgrow.models import ArchSpec, ResNet

    spec = ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8)
    for method in (None, Multilevel(start_blocks="1-1-1")):
        t = Trainer(ResNet(spec), mini, cfg(precision="bf16"), method)
        r = t.runner
        assert r.objective is None and r.before_step is None and r.bf16_copies is not None
        assert r.use_graph == (t.device.type == "cuda")
    grouped = Trainer(tiny(), mini, cfg(precision="bf16"), HeadSlower(0.5)).runner
    distil = Distil()
    distil.teacher = tiny()
    own = Trainer(tiny(), mini, cfg(precision="bf16"), distil).runner
    assert grouped.bf16_copies is not None and own.objective is not None and own.bf16_copies is None
