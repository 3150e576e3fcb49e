"""The examples in examples/ run as the README shows them (tiny settings)."""

import importlib.util
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_own_loop_grows_to_the_final_depth_with_momentum_carried(mini_zip, capsys, monkeypatch):
    mod = _load("own_loop")
    carried = []
    real = mod.carry_state
    monkeypatch.setattr(mod, "carry_state", lambda *a: carried.append(real(*a)) or carried[-1])
    model = mod.main(["--data", str(mini_zip), "--arch", "cifar_resnet14", "--start-blocks", "1-1-1", "--epochs", "3",
                      "--batch-size", "100", "--window", "1", "--reserve", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert model.spec.blocks == (2, 2, 2) and model.spec.h == ((0.5, 0.5),) * 3
    assert "grew 1-1-1 -> 2-2-2 (forced at epoch 2 to keep 1 reserve epoch)" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch")] == ["epoch 1", "epoch 2", "epoch 3"]
    assert "epoch 3: 2-2-2" in out
    # momentum follows the copies: stage 0's new block is a copy of its first block; in the one-block
    # stages 1 and 2 the first block downsamples, so its partner is a zero-branch block with zero momentum
    assert len(carried) == 1
    got = carried[0]
    assert got["stages.0.blocks.1.conv1.weight"] == "stages.0.blocks.0.conv1.weight"
    assert got["stages.1.blocks.0.conv1.weight"] == "stages.1.blocks.0.conv1.weight"
    assert {n for n, src in got.items() if src == "zeros"} == {
        f"stages.{s}.blocks.1.{p}" for s in (1, 2) for p in ("conv1.weight", "bn1.weight", "bn1.bias",
                                                             "conv2.weight", "bn2.weight", "bn2.bias")}
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_own_loop_augment_crops_and_flips_each_image():
    import torch.nn.functional as F

    augment = _load("own_loop").augment
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    y = augment(x)
    padded = F.pad(x, (4, 4, 4, 4))
    flipped = 0
    for k in range(16):
        crops = [padded[k, :, i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
        plain = any(torch.equal(y[k], c) for c in crops)
        mirrored = any(torch.equal(y[k], c.flip(2)) for c in crops)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 0 < flipped < 16  # flips are drawn per image


def test_the_readme_counts_the_mutation_entries_the_script_has():
    import re

    spec = importlib.util.spec_from_file_location("mutation_check", EXAMPLES.parent / "scripts" / "mutation_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # defines the table; breaks nothing until its main() runs
    said = re.search(r"it breaks (\d+) rules of the source", (EXAMPLES.parent / "README.md").read_text())
    assert said and int(said.group(1)) == len(mod.MUTATIONS)


def test_a_method_of_your_own_trains_and_resumes_from_the_command_line(small_zip, tmp_path, monkeypatch, capsys):
    """examples/grow_once.py, named as package.module:Class: its option is a flag, its plan is checked before the
    data is read, it grows, and a resume finds it by the name the run stored."""
    import json

    from resgrow.cli import main
    from resgrow.train import load_checkpoint

    monkeypatch.syspath_prepend(str(EXAMPLES))
    base = ["train", "--arch", "cifar_resnet14", "--data", str(small_zip), "--batch-size", "100", "--epochs", "3",
            "--device", "cpu", "--precision", "fp32", "--quiet", "--method", "grow_once:GrowOnce", "--grow-epoch", "1"]
    assert main([*base, "--out", str(tmp_path / "full")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["blocks"] for r in rows] == ["1-1-1", "2-2-2", "2-2-2"]
    assert [e["kind"] for e in rows[0]["events"]] == ["start", "grow"]
    assert main([*base, "--out", str(tmp_path / "part"), "--stop-after", "1"]) == 0
    assert main(["train", "--resume", "--out", str(tmp_path / "part"), "--quiet"]) == 0
    full, part = (load_checkpoint(tmp_path / d / "checkpoint.pt")["model"] for d in ("full", "part"))
    assert full.keys() == part.keys() and all(torch.equal(full[k], part[k]) for k in full)
    capsys.readouterr()
    assert main([*base[:-1], "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--grow-epoch must be >= 1, not 0" in capsys.readouterr().err and not (tmp_path / "bad").exists()
