"""Short CPU runs of every method, pinned: a change to the trainer, the step or a method must leave their
numbers as they were (the training step is being opened for new methods; these runs must not notice).

Each run's per-epoch losses, accuracies and lr, and a digest of its final weights, are kept in
`tests/pinned/runs.json`. On the CPU kind and torch version that wrote them, the digest must match bit for
bit; elsewhere (another vector unit, another torch) the losses must agree to 1e-3 and the accuracies
to 2 points. To re-pin after a
change that is meant to alter the numbers: `RESGROW_PIN=1 python -m pytest tests/test_pinned_runs.py`.
"""

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch

from resgrow.data import load_dataset
from resgrow.methods import build_method
from resgrow.models import build
from resgrow.train import TrainConfig, Trainer

PINNED = Path(__file__).parent / "pinned" / "runs.json"
RUNS = {"baseline": {}, "multilevel": {"start_blocks": "1-1-1"},
        "lipgrow": {"start_blocks": "1-1-1", "lip_window": 1, "reserve": 1}}


def _where() -> str:
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


def _train(small_zip, tmp_path, method: str) -> dict:
    data = load_dataset(small_zip, cache_dir=tmp_path / "cache")
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.1, device="cpu", quiet=True, seed=0)
    trainer = Trainer(build("cifar_resnet14", data.num_classes), data, cfg, build_method(method, **RUNS[method]),
                      out=tmp_path / method)
    rows = trainer.fit()
    h = hashlib.blake2b(digest_size=16)
    for k, v in trainer.model.state_dict().items():
        h.update(k.encode() + v.detach().contiguous().numpy().tobytes())
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "blocks")
    return {"rows": [{k: r.get(k) for k in keys} for r in rows], "weights": h.hexdigest()}


@pytest.mark.parametrize("method", list(RUNS))
def test_a_short_run_of_each_method_trains_as_pinned(small_zip, tmp_path, method):
    got = _train(small_zip, tmp_path, method)
    pinned = json.loads(PINNED.read_text()) if PINNED.exists() else {"where": _where(), "runs": {}}
    if os.environ.get("RESGROW_PIN"):
        pinned["where"] = _where()
        pinned["runs"][method] = got
        PINNED.write_text(json.dumps(pinned, indent=1) + "\n")
    want = pinned["runs"][method]
    if pinned["where"] == _where():
        assert got == want  # bit for bit
    for a, b in zip(got["rows"], want["rows"], strict=True):  # another machine rounds differently, a little
        assert a["blocks"] == b["blocks"] and a["lr"] == pytest.approx(b["lr"], rel=1e-12)
        assert all(math.isclose(a[k], b[k], rel_tol=1e-3) for k in ("train_loss", "test_loss")), (a, b)
        assert all(abs(a[k] - b[k]) <= 0.02 for k in ("train_acc", "test_acc")), (a, b)
