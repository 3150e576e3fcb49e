"""Every method resumes exactly wherever its run stopped: before, at and after a growth (with the method's
defaults), at a batch change, in each phase of go-wide-then-narrow, inside MG/OPT's V-cycle part and across
its nested iteration. One uninterrupted run keeps a copy of its directory after every epoch; each copy is
resumed, from Python with a fresh model and method as a new process would build them, and must end bit for
bit where the uninterrupted run ended (weights, the method's own modules, every logged loss).

A resume from Python is guarded as the command line's is: another setting or method option is refused with
one line naming it."""

import shutil

import pytest
import torch

from conftest import TINY, cfg
from resgrow.errors import ResgrowError
from resgrow.methods import build_method
from resgrow.models import ArchSpec, ViTSpec, model_for
from resgrow.train import Trainer

R14 = ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8)  # depth growth's default start: 1-1-1
R8 = ArchSpec("basic", (1, 1, 1), (8, 16, 32), stem_width=8)  # widths 2-4-8 -> 4-8-16 -> 8-16-32 from a quarter
R26 = ArchSpec("basic", (4, 4, 4), (8, 16, 32), stem_width=8)  # MG/OPT halves every stage's blocks
W2N = dict(teacher_epochs=1, imitate_epochs=1, distill_epochs=1)  # wide 1, imitate 3 stages, distill 1, labels 1
VIT = ViTSpec((2,), 32, 4, 64)  # heads of 8 channels: widen from half adds a pair of heads and MLP units

# name: final net, method, options, epochs, batch size, the epochs that end with a change (a growth, a phase,
# a batch size). The run stops after every epoch but its last: before, at and after each change.
CASES = {
    "baseline": (TINY, "baseline", {}, 3, 100, []),
    "multilevel": (R14, "multilevel", {}, 4, 100, [2]),  # the default growth epoch: 60 of 160, scaled
    "lipgrow": (R14, "lipgrow", {"lip_window": 1, "reserve": 1}, 4, 100, [3]),  # its score or the reserve
    "widen": (R8, "widen", {"growths": 2, "widen_every": 2}, 5, 100, [2, 4]),  # vt and lr adaptation: the defaults
    "widen-net2wider": (R8, "widen", {"growths": 1, "widen_every": 2, "widen_init": "net2wider", "lr_adapt": False},
                        4, 100, [2]),
    "widen-batch": (R8, "widen", {"growths": 2, "widen_every": 1, "batch_adapt": True}, 3, 25, [1, 2]),
    "wide2narrow": (TINY, "wide2narrow", W2N, 6, 100, [1, 2, 3, 4, 5]),
    "compound": (R14, "compound", {}, 4, 100, [2]),  # depth and width at once, at 60 of 160 epochs scaled
    "compound-lipschitz": (R14, "compound", {"trigger": "lipschitz", "grow_order": "alternate", "lip_window": 1,
                                             "reserve": 1, "batch_adapt": True}, 5, 50, [2, 4]),
    "mgopt-vcycles": (R26, "mgopt", {"mg_until": 0.5}, 3, 100, []),  # V-cycles in epochs 1-2, then plain steps
    "mgopt-nested": (R26, "mgopt", {"nested_epochs": 1, "line_search": "best"}, 3, 100, [1]),
    "mgopt-shared": (R26, "mgopt", {"shared_step": True, "nu_pre": 0, "nu_post": 0, "nu_c": 1, "line_search": "best"},
                     2, 100, []),
    # a ViT with AdamW (its moments and step counts carried and checkpointed): depth, and width with update scales
    "vit-multilevel": (VIT, "multilevel", {}, 3, 100, [1]),
    "vit-widen": (VIT, "widen", {"growths": 1, "start_width": 0.5, "widen_every": 1}, 3, 100, [1]),
}


def _trainer(data, case, out, resume=False, **config):
    spec, method, options, epochs, batch, _ = CASES[case]
    torch.manual_seed(0 if not resume else 1234)  # a new process shares no random state with the first
    adamw = {"optimizer": "adamw", "lr": 1e-3} if isinstance(spec, ViTSpec) else {}
    return Trainer(model_for(spec), data, cfg(**{"epochs": epochs, "batch_size": batch, **adamw, **config}),
                   build_method(method, **options), out=out, resume=resume)


def _state(trainer) -> dict:
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for name, module in trainer.method_modules().items():  # a teacher, MG/OPT's coarse levels
        state |= {f"{name}.{k}": v.clone() for k, v in module.state_dict().items()}
    return state


def _kinds(row) -> set:
    """What happened at the end of an epoch: a growth, a phase change, a batch change."""
    return {e["kind"] for e in row["events"]} | ({"batch"} if row.get("after_batch_size") else set())


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_resumes_bit_for_bit_after_every_epoch(small, tmp_path, case):
    full = _trainer(small, case, tmp_path / "full")
    epochs = CASES[case][3]
    for e in range(1, epochs):
        full.fit(until=e)
        shutil.copytree(tmp_path / "full", tmp_path / f"stop{e}")  # what a process killed after epoch e leaves
    full.fit()
    want, losses = _state(full), [r["train_loss"] for r in full.history]
    changes = [e for e, r in enumerate(full.history, 1) if _kinds(r) - {"start"}]
    assert changes == CASES[case][5]
    for e in range(1, epochs):
        resumed = _trainer(small, case, tmp_path / f"stop{e}", resume=True)
        resumed.fit()
        got = _state(resumed)
        assert got.keys() == want.keys(), f"stopped after epoch {e}"
        assert all(torch.equal(got[k], want[k]) for k in want), f"stopped after epoch {e}"
        assert [r["train_loss"] for r in resumed.history] == losses, f"stopped after epoch {e}"


def test_a_resume_from_python_refuses_other_settings_or_method_options_in_one_line(small, tmp_path):
    _trainer(small, "widen", tmp_path / "r").fit(until=1)  # growths=2, widen_every=2
    with pytest.raises(ResgrowError, match=r"keeps the settings it started with.*lr=0.2 \(the run's: 0.1\)"):
        _trainer(small, "widen", tmp_path / "r", resume=True, lr=0.2).fit()
    with pytest.raises(ResgrowError, match=r"epochs=6 \(the run's: 5\)"):
        _trainer(small, "widen", tmp_path / "r", resume=True, epochs=6).fit()
    other = Trainer(model_for(R8), small, cfg(epochs=5, batch_size=100), build_method("widen", growths=3, widen_every=1),
                    out=tmp_path / "r", resume=True)
    with pytest.raises(ResgrowError, match=r"growths=3 \(the run's: 2\); widen_every=1 \(the run's: 2\)"):
        other.fit()
    # where and how visibly the run goes on may change
    _trainer(small, "widen", tmp_path / "r", resume=True, quiet=False, eval_batch_size=77).fit(until=2)


def test_a_resume_from_the_command_line_names_the_flags_that_differ_in_one_line(capsys, small_zip, tmp_path):
    from resgrow.cli import main

    out = tmp_path / "r"
    assert main(["train", "--arch", "cifar_resnet8", "--data", str(small_zip), "--epochs", "3", "--batch-size", "50",
                 "--device", "cpu", "--quiet", "--out", str(out), "--stop-after", "1"]) == 0
    assert main(["train", "--resume", "--out", str(out), "--lr", "0.3", "--momentum", "0.8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keeps the settings it started with" in err[0], err
    assert "--lr 0.3 (the run's: 0.1); --momentum 0.8 (the run's: 0.9)" in err[0]


def test_a_widen_run_from_the_command_line_resumes_bit_for_bit_at_and_after_a_growth(small_zip, tmp_path):
    """With its defaults (vt, lr adaptation): the method's state is read before the trainer is built."""
    from resgrow.cli import main
    from resgrow.train import load_checkpoint

    run = ["train", "--arch", "cifar_resnet8", "--data", str(small_zip), "--epochs", "3", "--batch-size", "100",
           "--device", "cpu", "--quiet", "--method", "widen", "--growths", "2", "--widen-every", "1"]
    assert main([*run, "--out", str(tmp_path / "full")]) == 0
    want = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["model"]
    for stop in (1, 2):  # at the first growth, after it (at the second)
        out = tmp_path / f"stop{stop}"
        assert main([*run, "--out", str(out), "--stop-after", str(stop)]) == 0
        assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
        got = load_checkpoint(out / "checkpoint.pt")["model"]
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), f"stopped after {stop}"
