"""Short CPU runs of every method that trains, pinned: a change to the trainer, the step or a method must
leave their numbers where they were, on any CPU.

Each run's per-epoch losses, accuracies, lr and size are kept in `tests/pinned/runs.json`, with the
tolerances the comparison allows. Two CPUs round differently (another vector unit, another oneDNN kernel,
another thread count), so stored numbers are never compared bit for bit: the tolerances are four times
the largest spread measured between numeric back-ends of one machine, per method (`scripts/pin_runs.py`, which says
how, and writes the file). Bit-for-bit equality is checked only between runs of one test process (the resume tests).

`RESGROW_PIN=FILE` makes this module write its runs' numbers to FILE and skip instead of comparing: that is
how `scripts/pin_runs.py` collects them; it never passes as a test.
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from resgrow.data import load_dataset
from resgrow.methods import build_method
from resgrow.models import ArchSpec, ResNet
from resgrow.train import TrainConfig, Trainer, device

PINNED = Path(__file__).parent / "pinned" / "runs.json"
R14 = ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8)
R26 = ArchSpec("basic", (4, 4, 4), (8, 16, 32), stem_width=8)
# method: (final net, options, epochs); the small zip, batch 100, a gentle lr: few steps and little chaos, so
# that another CPU's rounding moves the numbers little and a changed rule moves them more
RUNS = {
    "baseline": (R14, {}, 3),
    "multilevel": (R14, {"start_blocks": "1-1-1"}, 3),
    "lipgrow": (R14, {"start_blocks": "1-1-1", "lip_window": 1, "reserve": 1}, 3),
    "widen": (R14, {"growths": 1, "start_width": 0.5, "widen_every": 1}, 3),
    "mgopt": (R26, {"nested_epochs": 1, "line_search": "fixed"}, 2),  # no accept-or-reject decision to tip over
    # the wide net 1 epoch, imitation 1 per stage, labels 1
    "wide2narrow": (R14, {"teacher_width": 2, "teacher_epochs": 1, "imitate_epochs": 1, "distill_epochs": 0}, 5),
    "compound": (R14, {"grow_at": (1,)}, 3),  # 1-1-1 at 4-8-16, then the final net: depth and width at once
}
# The training loss and accuracy of each epoch (means over its steps). Not the test set's: after a few epochs on
# 400 images its loss swings with BN's running statistics (up to 90% apart between two numeric back-ends), so a
# tolerance wide enough for it would notice nothing.
NUMBERS = ("train_loss", "train_acc")


def pinned_run(data, out: Path, method: str) -> dict:
    spec, options, epochs = RUNS[method]
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=epochs, batch_size=100, lr=0.02, device="cpu", quiet=True, seed=0, precision="fp32")
    rows = Trainer(ResNet(spec), data, cfg, build_method(method, **options), out=out).fit()
    return {"rows": [{k: r.get(k) for k in (*NUMBERS, "lr", "blocks", "widths")} for r in rows]}


def within(got: dict, want: dict, tolerance: dict) -> list[str]:
    """What differs between two runs' rows beyond `tolerance` ({"loss_rel": r, "acc_abs": a}); [] if nothing."""
    if len(got["rows"]) != len(want["rows"]):
        return [f"{len(got['rows'])} epochs, pinned {len(want['rows'])}"]
    off = []
    for e, (a, b) in enumerate(zip(got["rows"], want["rows"]), 1):
        for k in ("blocks", "widths"):
            if a[k] != b[k]:
                off.append(f"epoch {e} {k} {a[k]} (pinned {b[k]})")
        if not math.isclose(a["lr"], b["lr"], rel_tol=1e-9):
            off.append(f"epoch {e} lr {a['lr']} (pinned {b['lr']})")
        off += [f"epoch {e} train_loss {a['train_loss']:.6g} (pinned {b['train_loss']:.6g})"] * (
            not math.isclose(a["train_loss"], b["train_loss"], rel_tol=tolerance["loss_rel"]))
        off += [f"epoch {e} train_acc {a['train_acc']:.4f} (pinned {b['train_acc']:.4f})"] * (
            abs(a["train_acc"] - b["train_acc"]) > tolerance["acc_abs"] + 1e-9)
    return off


@pytest.fixture(autouse=True)
def pinned_layout(monkeypatch):
    """The layout the numbers were pinned with, on any CPU: NCHW at widths that are not a multiple of 16 (the rule of
    a CPU with AMX), channels_last at the others; a layout rounds differently from the other."""
    monkeypatch.setattr(device, "nchw_at_odd_widths", lambda dev: dev.type == "cpu")


@pytest.fixture(scope="module")
def pinned_data(small_zip, tmp_path_factory):
    return load_dataset(small_zip, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("method", list(RUNS))
def test_a_short_run_of_each_method_trains_as_pinned(pinned_data, tmp_path, method):
    got = pinned_run(pinned_data, tmp_path / method, method)
    target = os.environ.get("RESGROW_PIN")
    if target:
        path = Path(target)
        runs = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**runs, method: got}, indent=1) + "\n")
        pytest.skip(f"RESGROW_PIN: wrote the {method} run to {path}, compared nothing")
    pinned = json.loads(PINNED.read_text())
    off = within(got, pinned["runs"][method], pinned["tolerance"][method])
    assert not off, f"{method}: " + "; ".join(off)


def test_the_comparison_refuses_a_run_that_moved_beyond_the_tolerance():
    pinned = json.loads(PINNED.read_text())
    tol, want = pinned["tolerance"]["baseline"], pinned["runs"]["baseline"]
    assert within(want, want, tol) == []
    moved = json.loads(json.dumps(want))
    moved["rows"][-1]["train_loss"] *= 1 + 2 * tol["loss_rel"]
    moved["rows"][0]["train_acc"] += 2 * tol["acc_abs"] + 0.01
    moved["rows"][1]["lr"] *= 1.001
    off = within(moved, want, tol)
    assert len(off) == 3 and [o.split(" (")[0].rsplit(" ", 1)[0] for o in off] == ["epoch 1 train_acc", "epoch 2 lr",
                                                                                  "epoch 3 train_loss"], off
    for method, t in pinned["tolerance"].items():  # tight enough to notice a changed rule
        assert t["loss_rel"] < 0.05 and t["acc_abs"] <= 0.1, (method, t)
