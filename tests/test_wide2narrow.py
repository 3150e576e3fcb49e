"""--method wide2narrow: the wide net, layerwise imitation bottom to top, distillation, labels; the final net is
the plain thin one; the run resumes exactly mid-imitation; a teacher from another run; bad inputs."""

import json

import pytest
import torch

from conftest import TINY, cfg, weights
from resgrow.cli import main
from resgrow.methods import build_method
from resgrow.methods.wide2narrow import wide_spec
from resgrow.models import ResNet
from resgrow.train import Trainer, load_model

PHASES = dict(teacher_epochs=1, imitate_epochs=1, distill_epochs=1)  # 1 + 3 stages + 1 + labels 1 = 6 epochs


def _run(data, out=None, resume=False, epochs=6, **options):
    torch.manual_seed(0)
    return Trainer(ResNet(TINY), data, cfg(epochs=epochs, batch_size=100), build_method("wide2narrow", **options),
                   out=out, resume=resume)


def test_the_wide_net_widens_the_inner_convs_or_every_width():
    inner = wide_spec(TINY, 4)
    assert inner.widths == TINY.widths and inner.inner_widths == (32, 64, 128) and inner.blocks == TINY.blocks
    every = wide_spec(TINY, 2, "all")
    assert every.widths == (16, 32, 64) and every.stem_width == 16 and every.inner_widths == (16, 32, 64)


def test_a_run_goes_through_its_phases_and_ends_as_the_plain_thin_net(small, tmp_path):
    trainer = _run(small, tmp_path / "r", **PHASES)
    rows = trainer.fit()
    phases = [e.get("phase") for r in rows for e in r["events"] if e["kind"] == "phase"]
    assert phases == ["imitate", "imitate", "imitate", "distill", "labels"]
    assert rows[0]["flops"] > 2 * rows[-1]["flops"]  # the first epoch trains the wide net
    assert trainer.model.spec == TINY and len(trainer.model.aux) == 0
    assert rows[-1]["teacher_acc"] == rows[0]["test_acc"]
    # the wide net's forward passes count in the imitation and distillation epochs
    assert rows[1]["grad_equivalents"] > 1.5 * rows[1]["steps"] and rows[-1]["grad_equivalents"] == rows[-1]["steps"]
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ck["modules"] == {}  # the teacher left the checkpoints with the labels phase
    saved = load_model(tmp_path / "r")
    assert saved.spec == TINY and type(saved) is ResNet


def test_imitation_trains_the_unit_alone_and_leaves_the_units_below_and_above_and_the_wide_net(small):
    trainer = _run(small, **PHASES)
    trainer.fit(until=2)  # the wide net, then stage 1 imitating
    teacher = trainer.method.teacher_net
    wide = {k: v.clone() for k, v in teacher.state_dict().items()}
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit(until=3)  # stage 2 imitating
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
    assert moved and all(n.startswith("stages.1.") for n in moved)
    trainer.fit(until=5)  # stage 3, distillation: the wide net, its BN statistics too, stays as trained
    assert all(torch.equal(wide[k], v) for k, v in teacher.state_dict().items())
    assert [r["phase"] for r in trainer.history] == ["teacher", "imitate stage 1", "imitate stage 2", "imitate stage 3",
                                                     "distill"]


def test_the_imitation_loss_falls_unit_by_unit_on_a_fixed_batch():
    torch.manual_seed(0)
    thin, method = ResNet(TINY), build_method("wide2narrow", teacher_widen="all", teacher_width=2, **PHASES)
    teacher = ResNet(wide_spec(TINY, 2, "all"))
    method.plan = method.phases(TINY, 6)
    method.teacher_net = method._freeze(teacher)
    method._attach_maps(thin)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    for unit in range(3):
        method.phase = 1 + unit
        method._set_objective()
        groups = {g.name: g for g in method.param_groups(thin)}
        params = dict(thin.named_parameters())
        opt = torch.optim.SGD([params[n] for n in groups[f"unit{unit}"].params], lr=0.05, momentum=0.9)
        losses = []
        for _ in range(30):
            opt.zero_grad()
            loss, logits = method.objective()(thin, x, y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert logits.shape == (32, 10)
        assert losses[-1] < 0.7 * losses[0], (unit, losses[0], losses[-1])


def test_a_run_killed_during_imitation_resumes_to_the_same_weights(small, tmp_path):
    options = dict(PHASES, teacher_widen="all", teacher_width=2)  # with maps on the model while it imitates
    full = _run(small, tmp_path / "full", **options)
    full.fit()
    _run(small, tmp_path / "part", **options).fit(until=3)
    resumed = _run(small, tmp_path / "part", resume=True, **options)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith("aux.") for k in a)  # the maps went with the imitation
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


def test_a_teacher_from_a_finished_run_skips_the_wide_phase_and_brings_its_cost(small, tmp_path):
    torch.manual_seed(1)
    wide = Trainer(ResNet(wide_spec(TINY, 2)), small, cfg(epochs=1, batch_size=100), build_method("baseline"),
                   out=tmp_path / "wide")
    wide_rows = wide.fit()
    rows = _run(small, tmp_path / "thin", epochs=4, teacher=str(tmp_path / "wide"), imitate_epochs=1,
                distill_epochs=0).fit()
    assert rows[0]["flops"] == rows[-1]["flops"]  # thin from the first epoch
    assert rows[-1]["teacher_acc"] == wide_rows[-1]["test_acc"]
    assert rows[-1]["teacher_seconds"] == wide_rows[-1]["train_seconds"]


@pytest.mark.parametrize("args,words", [
    (["--teacher-width", "0.5"], "--teacher-width must be >= 1"),
    (["--teacher-widen", "some"], "unknown --teacher-widen 'some'"),
    (["--epochs", "10", "--teacher-epochs", "5", "--imitate-epochs", "2"], "leaving none of the 10 for labels"),
    (["--schedule", "step"], "use --schedule cosine"),
])
def test_bad_wide2narrow_options_are_one_line_before_any_data_is_read(capsys, tmp_path, args, words):
    rc = main(["train", "--arch", "resnet20", "--data", str(tmp_path / "no-such-data.zip"), "--out", str(tmp_path / "r"),
               "--method", "wide2narrow", "--device", "cpu", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err


def test_a_teacher_of_other_blocks_or_other_data_is_one_line(capsys, tmp_path, small):
    from resgrow.models import spec_for

    teacher = tmp_path / "wide"
    Trainer(ResNet(wide_spec(spec_for("resnet20"), 2)), small, cfg(epochs=1, batch_size=200), build_method("baseline"),
            out=teacher).fit()
    info = json.loads((teacher / "run.json").read_text())
    (teacher / "run.json").write_text(json.dumps(dict(info, data=str(tmp_path / "other.zip"))))
    base = ["train", "--data", str(tmp_path / "no-such-data.zip"), "--method", "wide2narrow", "--device", "cpu",
            "--teacher", str(teacher)]
    rc = main([*base, "--arch", "resnet32", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "blocks 3-3-3" in err[0] and "5-5-5" in err[0], err
    rc = main([*base, "--arch", "resnet20", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "other.zip" in err[0], err


def test_while_a_unit_imitates_the_units_below_train_at_the_lower_lr_and_the_rest_wait():
    method = build_method("wide2narrow", lower_lr=0.1, **PHASES)
    method.plan, method.phase = method.phases(TINY, 6), 2  # stage 2 imitating
    groups = {g.name: g for g in method.param_groups(ResNet(TINY))}
    assert {n: g.lr_scale for n, g in groups.items()} == {"unit1": 1.0, "below1": 0.1, "above1": 0.0}
    assert {p.split(".")[0] + p.split(".")[1] * p.startswith("stages") for p in groups["below1"].params} == {"stem", "stages0"}
    assert all(p.startswith("stages.1.") for p in groups["unit1"].params)
    assert {p.split(".")[0] for p in groups["above1"].params} == {"stages", "head"}
    method.phase = 4  # distillation: one group
    assert method.param_groups(ResNet(TINY)) is None
