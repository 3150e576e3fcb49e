import copy
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, cfg, tiny, weights
from resgrow.data import EvalLoader, channel_stats
from resgrow.errors import DivergedError, ResgrowError
from resgrow.methods import Change, Method
from resgrow.models import ArchSpec, ResNet
from resgrow.train import (
    CHECKPOINT,
    Schedule,
    Trainer,
    evaluate,
    evaluate_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)


def test_short_real_run_beats_chance(mini, tmp_path):
    rows = Trainer(tiny(), mini, cfg(epochs=6), out=tmp_path / "run").fit()
    assert rows[-1]["test_acc"] > 0.25, rows[-1]  # chance is 0.10 on 500 balanced test images
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.3
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == list(range(1, 7))
    assert {"train_seconds", "test_acc", "lr", "params", "flops", "blocks", "widths", "events", "spec"} <= set(logged[0])
    assert logged[0]["blocks"] == "1-1-1" and logged[0]["params"] == sum(p.numel() for p in ResNet(TINY).parameters())
    assert logged[-1]["train_seconds"] > logged[0]["train_seconds"] > 0
    assert all(r["eval_seconds"] > 0 for r in logged)  # evaluation is timed, apart from training
    csv_lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,train_seconds,train_loss") and len(csv_lines) == 7
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert ArchSpec.from_dict(run["spec"]) == TINY


def test_resume_equals_uninterrupted(small, tmp_path):
    full = Trainer(tiny(), small, cfg(), out=tmp_path / "full")
    full.fit()
    part = Trainer(tiny(), small, cfg(), out=tmp_path / "part")
    assert Trainer(tiny(), small, cfg()).fit(until=0) == []  # until=0 trains nothing (it used to mean "all")
    part.fit(until=1)  # the process "dies" here; only the directory survives
    del part
    torch.manual_seed(1234)  # a fresh process would not share the global RNG state either
    resumed = Trainer(tiny(seed=99), small, cfg(), out=tmp_path / "part", resume=True)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_a_stop_after_epoch_k_checkpoints_epoch_k_whatever_checkpoint_every_says(mini, tmp_path):
    """fit(until=K) / --stop-after K is a clean stop: the run resumes at epoch K, not at the last periodic
    checkpoint (or at nothing: a 160-epoch run with --checkpoint-every 20 stopped after epoch 5 had none)."""
    c = cfg(epochs=4, checkpoint_every=3)
    Trainer(tiny(), mini, c, out=tmp_path / "r").fit(until=2)
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT)["epoch"] == 2
    resumed = Trainer(tiny(), mini, c, out=tmp_path / "r", resume=True)
    resumed.fit(until=3)
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT)["epoch"] == 3 and resumed.epoch == 3


def test_resume_after_a_kill_in_the_middle_of_a_log_row(small, tmp_path):
    """A process killed while appending to metrics.jsonl leaves half a row (of an epoch after the
    checkpoint): resume drops it and rewrites both logs whole; damage before the last line is one error."""
    run = tmp_path / "r"
    Trainer(tiny(), small, cfg(), out=run).fit(until=2)
    log = run / "metrics.jsonl"
    log.write_text(log.read_text() + '{"epoch": 3, "train_seconds": 1.')  # the kill
    rows = Trainer(tiny(), small, cfg(), out=run, resume=True).fit()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2, 3]
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[3].startswith("3,") and not list(run.glob(".*tmp*"))  # no temporary file left behind

    bad = tmp_path / "bad"
    Trainer(tiny(), small, cfg(), out=bad).fit(until=2)
    lines = (bad / "metrics.jsonl").read_text().splitlines()
    (bad / "metrics.jsonl").write_text("{broken\n" + lines[1] + "\n")
    with pytest.raises(ResgrowError, match="damaged before its last line.*checkpoint is intact"):
        Trainer(tiny(), small, cfg(), out=bad, resume=True).fit()
    assert (bad / CHECKPOINT).is_file()


def own_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))


def test_any_model_trains_at_a_fixed_size_and_resumes(mini, tmp_path):
    full = Trainer(own_model(), mini, cfg(epochs=2), out=tmp_path / "full")
    rows = full.fit()
    conv, linear = 2 * 3 * 16 * 9 * 32 * 32, 2 * 16 * 10  # a multiply-add counts 2
    assert rows[-1]["model"] == "Sequential" and rows[-1]["flops"] == conv + linear
    assert rows[-1]["params"] == 3 * 16 * 9 + 2 * 16 + 16 * 10 + 10 and "blocks" not in rows[-1]
    assert json.loads((tmp_path / "full" / "run.json").read_text())["model_class"] == "Sequential"
    Trainer(own_model(), mini, cfg(epochs=2), out=tmp_path / "part").fit(until=1)
    resumed = Trainer(own_model(seed=5), mini, cfg(epochs=2), out=tmp_path / "part", resume=True)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(ResgrowError, match="holds a Sequential, not the given ResNet"):
        Trainer(tiny(), mini, cfg(epochs=3), out=tmp_path / "part", resume=True).fit()
    with pytest.raises(ResgrowError, match="Sequential of your own, which resgrow cannot rebuild"):
        load_model(tmp_path / "full")
    from resgrow.methods import LipGrow
    with pytest.raises(ResgrowError, match="'lipgrow' changes the model's size, which needs a resgrow ResNet"):
        Trainer(own_model(), mini, cfg(), method=LipGrow())


def test_a_model_that_does_not_fit_the_data_is_refused_before_training(mini, tmp_path):
    nn = torch.nn
    head = lambda n_in, n_out: nn.Sequential(nn.Flatten(), nn.Linear(n_in, n_out))  # noqa: E731
    frozen = head(3 * 32 * 32, 10).requires_grad_(False)

    class AuxLogits(nn.Module):  # like torchvision's Inception: (logits, aux) in train mode only
        def __init__(self):
            super().__init__()
            self.fc = head(3 * 32 * 32, 10)

        def forward(self, x):
            y = self.fc(x)
            return (y, y) if self.training else y

    for model, words in [(AuxLogits(), r"for a batch of 2 it returned tuple in train mode \(what the loss sees"),
                         (head(3 * 32 * 32, 7), r"logits of shape \(batch, 10\) for the data's 10 classes; for a batch of 1 it returned \(1, 7\)"),
                         (head(100, 10), r"cannot take the data's 3x32x32 images \(RuntimeError: mat1 and mat2"),
                         (frozen, "has no trainable parameters")]:
        with pytest.raises(ResgrowError, match=words):
            Trainer(model, mini, cfg(), out=tmp_path / "r")
        assert not (tmp_path / "r").exists()
    # the check's forward leaves the model as it was: train mode, BN statistics untouched
    model = own_model()
    stats, counted = model[1].running_mean.clone(), model[1].num_batches_tracked.clone()
    model.insert(2, nn.Dropout(0.5))  # draws in the train-mode forward: the generator is put back
    rng = torch.get_rng_state()
    Trainer(model, mini, cfg())
    assert model.training and torch.equal(model[1].running_mean, stats)
    assert torch.equal(model[1].num_batches_tracked, counted) and torch.equal(torch.get_rng_state(), rng)


def test_resume_refuses_other_data_under_the_same_name(mini, tmp_path):
    import dataclasses

    Trainer(tiny(), mini, cfg(), out=tmp_path / "r").fit(until=1)
    renamed = dataclasses.replace(mini, classes=[c.upper() for c in mini.classes])
    with pytest.raises(ResgrowError, match="trained on data with classes"):
        Trainer(tiny(), renamed, cfg(), out=tmp_path / "r", resume=True).fit()
    images = mini.train.images.clone()
    images[:100] = 255 - images[:100]  # 5% of the images replaced
    changed = dataclasses.replace(mini, train=dataclasses.replace(mini.train, images=images))
    with pytest.raises(ResgrowError, match="trained on other images"):
        Trainer(tiny(), changed, cfg(), out=tmp_path / "r", resume=True).fit()
    assert Trainer(tiny(), mini, cfg(), out=tmp_path / "r", resume=True).fit()[-1]["epoch"] == 3  # the same data


class Deepen1(Method):
    """Test-only size change after epoch 1: stage 0 gets a second block copied from its first."""

    name = "test-deepen"

    def on_epoch_end(self, ctx):
        if ctx.epoch != 1:
            return None
        old = ctx.model
        spec = old.spec
        new = ResNet(spec.replace(blocks=(2,) + spec.blocks[1:]))
        sd = {k: v for k, v in old.state_dict().items()}
        sd.update({k.replace("stages.0.blocks.0.", "stages.0.blocks.1."): v for k, v in sd.items() if k.startswith("stages.0.blocks.0.")})
        new.load_state_dict(sd)
        pmap = {n: n for n, _ in old.named_parameters()}
        pmap.update({n.replace("blocks.0.", "blocks.1."): (n, lambda t: 2 * t)
                     for n, _ in old.named_parameters() if n.startswith("stages.0.blocks.0.conv")})
        return Change(new, pmap, "grew 1-1-1 -> 2-1-1")


def test_size_change_carries_momentum(mini, tmp_path):
    trainer = Trainer(tiny(), mini, cfg(epochs=1), method=Deepen1(), out=tmp_path / "r")
    trainer.fit()
    old_mom = {n: trainer.optimizer.state[p]["momentum_buffer"].clone() for n, p in trainer.model.named_parameters()}
    assert all(v.abs().sum() > 0 for v in old_mom.values())
    change = Deepen1().on_epoch_end(trainer._ctx())
    got = trainer.apply_change(change)
    new_mom = {n: trainer.optimizer.state[p]["momentum_buffer"] for n, p in trainer.model.named_parameters()}
    for n, v in old_mom.items():  # unchanged parameters keep their momentum
        assert torch.equal(new_mom[n], v), n
    assert torch.equal(new_mom["stages.0.blocks.1.conv1.weight"], 2 * old_mom["stages.0.blocks.0.conv1.weight"])
    assert torch.equal(new_mom["stages.0.blocks.1.bn1.weight"], torch.zeros_like(new_mom["stages.0.blocks.1.bn1.weight"]))
    assert got["stages.0.blocks.1.bn1.weight"] == "zeros" and got["stages.0.blocks.1.conv2.weight"] == "stages.0.blocks.0.conv2.weight"
    assert trainer.model.spec.blocks == (2, 1, 1)
    assert set(trainer.optimizer.state) == set(trainer.model.parameters())


def test_growth_inside_a_run_is_logged_and_resumable(small, tmp_path):
    full = Trainer(tiny(), small, cfg(), method=Deepen1(), out=tmp_path / "full")
    rows = full.fit()
    assert rows[0]["events"] == [{"kind": "grow", "text": "grew 1-1-1 -> 2-1-1"}] and rows[0]["after_blocks"] == "2-1-1"
    assert rows[1]["blocks"] == "2-1-1" and rows[1]["params"] > rows[0]["params"]
    part = Trainer(tiny(), small, cfg(), method=Deepen1(), out=tmp_path / "part")
    part.fit(until=1)  # checkpoint taken right after the growth
    assert load_checkpoint(tmp_path / "part" / CHECKPOINT)["spec"]["blocks"] == [2, 1, 1]
    resumed = Trainer(tiny(), small, cfg(), method=Deepen1(), out=tmp_path / "part", resume=True)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_grown_run_reloads_as_its_final_model(mini, tmp_path):
    trainer = Trainer(tiny(), mini, cfg(), method=Deepen1(), out=tmp_path / "r")
    rows = trainer.fit()
    model = load_model(tmp_path / "r")
    assert model.spec.blocks == (2, 1, 1) and not model.training
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in model.state_dict().items())
    assert model.data_cfg["input_size"] == [3, 32, 32] and model.data_cfg["classes"] == mini.classes
    assert model.data_cfg["mean"] == list(trainer.mean) and model.run_epoch == len(rows)
    r = evaluate_model(model, mini)
    assert r["acc"] == rows[-1]["test_acc"] and r["loss"] == pytest.approx(rows[-1]["test_loss"], rel=1e-6)
    model.data_cfg = None  # a checkpoint from before data_cfg: the data's own training statistics, as in training
    assert evaluate_model(model, mini)["acc"] == r["acc"]


def test_evaluate_gives_the_mean_loss_and_accuracy_over_the_split(mini):
    model = tiny().eval()
    mean, std = channel_stats(mini.train.images)
    loader = EvalLoader(mini.test, 64, "cpu", mean, std)  # 64 does not divide the split: a short last batch
    assert len(mini.test) % 64
    loss, acc = evaluate(model, loader, amp=False)
    with torch.no_grad():
        out = torch.cat([model(x) for x, _ in loader])
    assert loss == pytest.approx(F.cross_entropy(out, mini.test.labels).item(), rel=1e-5)
    assert acc == (out.argmax(1) == mini.test.labels).sum().item() / len(mini.test)


def test_label_smoothing_and_nesterov_reach_the_step(mini):
    trainer = Trainer(tiny(), mini, cfg(label_smoothing=0.3, nesterov=True))
    assert all(g["nesterov"] for g in trainer.optimizer.param_groups)
    trainer.loader.start_epoch(0)
    x, y = trainer.loader.next_batch()
    with torch.no_grad():
        smoothed, plain = (F.cross_entropy(trainer.model(x), y, label_smoothing=ls).item() for ls in (0.3, 0.0))
    trainer.loader.start_epoch(0)
    trainer.runner.reset_metrics()
    trainer.runner.run()  # the first step's loss is the fresh model's on the first batch
    assert trainer.runner.read_metrics(1)[0] == pytest.approx(smoothed, rel=1e-5) and abs(smoothed - plain) > 1e-3


def test_nan_loss_stops_and_keeps_last_good_checkpoint(mini, tmp_path):
    trainer = Trainer(tiny(), mini, cfg(epochs=4), out=tmp_path / "r")
    trainer.fit(until=2)
    trainer.schedule.lr = 1e12  # blows up in epoch 3
    with pytest.raises(DivergedError, match=r"epoch 3.*last good checkpoint .*epoch 2"):
        trainer.fit()
    ck = load_checkpoint(tmp_path / "r" / CHECKPOINT)
    assert ck["epoch"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    last = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 3 and {"kind": "diverged", "text": "diverged"} in last["events"] and not math.isfinite(last["train_loss"])


class BlowUpAfter(Method):
    name = "test-blowup"

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, ctx):
        if ctx.epoch == self.epoch:
            ctx.schedule.lr = 1e12


def test_a_diverged_run_names_the_checkpoint_it_has_not_the_epoch_before(small, tmp_path):
    trainer = Trainer(tiny(), small, cfg(epochs=4, checkpoint_every=2), method=BlowUpAfter(3), out=tmp_path / "r")
    with pytest.raises(DivergedError, match=r"epoch 4.*last good checkpoint .*\(epoch 2\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT)["epoch"] == 2
    with pytest.raises(DivergedError, match="no checkpoint was written before it"):
        Trainer(tiny(), small, cfg(epochs=4, checkpoint_every=3), method=BlowUpAfter(1), out=tmp_path / "s").fit()


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_malicious_checkpoint_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": Boom()}, tmp_path / "evil.pt")
    with pytest.raises(ResgrowError, match="refusing checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_tampered_and_truncated_checkpoints_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"w": torch.arange(4096, dtype=torch.float32), "epoch": 3}, path)
    assert load_checkpoint(path)["epoch"] == 3
    data = bytearray(path.read_bytes())
    i = data.find(torch.arange(4096, dtype=torch.float32)[1000:1002].numpy().tobytes())
    assert i > 0
    data[i] ^= 0x40
    (tmp_path / "t.pt").write_bytes(bytes(data))
    with pytest.raises(ResgrowError, match="modified"):
        load_checkpoint(tmp_path / "t.pt")
    (tmp_path / "s.pt").write_bytes(path.read_bytes()[: len(data) // 2])
    with pytest.raises(ResgrowError, match="unreadable"):
        load_checkpoint(tmp_path / "s.pt")
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_a_checkpoint_of_another_format_is_refused_naming_what_wrote_it(tmp_path):
    import resgrow
    from resgrow.train import checkpoint

    path = tmp_path / "c.pt"
    save_checkpoint({"epoch": 3}, path)
    assert load_checkpoint(path)["resgrow"] == resgrow.__version__
    for wrote, said in (({"resgrow": "0.0.9"}, "written by resgrow 0.0.9"), ({}, "written by an earlier resgrow")):
        old = {"epoch": 3, "format": checkpoint.FORMAT - 1, **wrote}
        torch.save(dict(old, **{checkpoint.DIGEST_KEY: checkpoint.digest(old)}), path)
        with pytest.raises(ResgrowError, match=f"has format {checkpoint.FORMAT - 1}, {said}; this resgrow"):
            load_checkpoint(path)


def test_a_failed_checkpoint_write_keeps_the_previous_one(mini, tmp_path, monkeypatch):
    import errno

    import resgrow.train.checkpoint as ck

    out = tmp_path / "r"
    t = Trainer(tiny(), mini, cfg(epochs=2), out=out)
    t.fit(until=1)
    good = (out / CHECKPOINT).read_bytes()

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", disk_full)
    with pytest.raises(ResgrowError, match=r"No space left on device\); the previous checkpoint, if any, is intact"):
        t.fit()
    assert (out / CHECKPOINT).read_bytes() == good and load_checkpoint(out / CHECKPOINT)["epoch"] == 1
    assert not list(out.glob(".*tmp*"))


def test_run_directory_is_never_overwritten(mini, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ResgrowError, match="not empty"):
        Trainer(tiny(), mini, cfg(), out=out)
    assert (out / "precious.txt").read_text() == "keep me"
    with pytest.raises(ResgrowError, match="no checkpoint.pt"):
        Trainer(tiny(), mini, cfg(), out=out, resume=True)


class Interrupted(Method):
    def on_epoch_end(self, ctx):
        raise KeyboardInterrupt  # Ctrl-C as the first epoch ends: before its checkpoint and log row


def test_a_run_stopped_before_its_first_epoch_ended_can_be_started_again(mini, tmp_path, capsys):
    from resgrow.train.run_dir import never_trained

    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny(), mini, cfg(), method=Interrupted(), out=out).fit()
    assert sorted(p.name for p in out.iterdir()) == ["run.json"] and never_trained(out)
    with pytest.raises(ResgrowError, match="no checkpoint.pt; it never finished an epoch: start it again without --resume"):
        Trainer(tiny(), mini, cfg(), out=out, resume=True)
    capsys.readouterr()
    rows = Trainer(tiny(), mini, cfg(epochs=1, quiet=False), out=out).fit()
    assert len(rows) == 1 and "holds a run that stopped before its first epoch ended: starting it again" in capsys.readouterr().err
    assert (out / CHECKPOINT).is_file() and not never_trained(out)
    # anything more than such a run.json is a run (or a file) to keep
    for name, text in [("run.json", '{"a": 1}'), ("run.json", "{broken"), ("notes.txt", "mine")]:
        other = tmp_path / f"other_{name}_{len(text)}"
        other.mkdir()
        (other / "run.json").write_text((out / "run.json").read_text())
        (other / name).write_text(text)
        with pytest.raises(ResgrowError, match="already exists and is not empty"):
            Trainer(tiny(), mini, cfg(), out=other)


def test_a_run_directory_in_use_is_refused(mini, tmp_path):
    from resgrow.train.run_lock import RunLock

    out = tmp_path / "r"
    other = RunLock(out)  # another process training into `out` right now (flock: a second open file conflicts)
    other.acquire()
    second = Trainer(tiny(), mini, cfg(epochs=1), out=out)  # both saw an empty directory
    with pytest.raises(ResgrowError, match=rf"{out} is in use by another resgrow process \(pid {os.getpid()}\)"):
        second.fit()
    assert [p.name for p in out.iterdir()] == [".lock"]  # the second wrote nothing
    other.release()
    (out / ".lock").write_text("12345\n")  # left by a killed process: nobody holds it
    Trainer(tiny(), mini, cfg(epochs=1), out=out).fit()
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT, "metrics.csv", "metrics.jsonl", "run.json"]
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ResgrowError, match=r"cannot create run directory .*a_file/r: .*a_file is not a writable directory"):
        Trainer(tiny(), mini, cfg(epochs=1), out=tmp_path / "a_file" / "r")
    lock = RunLock(tmp_path / "a_file" / "r")  # what the file system says when it still refuses at fit()
    with pytest.raises(ResgrowError, match=r"cannot create run directory .*a_file/r \(Not a directory\)"):
        lock.acquire()


def test_a_lock_file_removed_by_its_holder_while_waiting_is_not_taken(tmp_path, monkeypatch):
    """Opened just before the holder's release removed it, locked just after: a lock on a file nobody else
    can open, which would let a third process lock the new .lock as well. The lock goes to the file there."""
    import fcntl

    from resgrow.train.run_lock import RunLock

    real, calls = fcntl.flock, []

    def holder_leaves_first(fd, op):
        calls.append(fd)
        if len(calls) == 1:
            (tmp_path / "r" / ".lock").unlink()  # the holder's release, between our open and our flock
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", holder_leaves_first)
    lock = RunLock(tmp_path / "r")
    lock.acquire()
    assert len(calls) == 2 and os.fstat(lock.fd).st_ino == os.stat(tmp_path / "r" / ".lock").st_ino
    monkeypatch.setattr(fcntl, "flock", real)
    with pytest.raises(ResgrowError, match="in use by another resgrow process"):
        RunLock(tmp_path / "r").acquire()
    lock.release()


def test_a_file_system_without_locks_trains_unlocked_with_a_warning(mini, tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(fd, op):  # Lustre mounted without flock says this
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert Trainer(tiny(), mini, cfg(epochs=1), out=tmp_path / "r").fit()[-1]["epoch"] == 1
    assert "has no file locks (Function not implemented): nothing stops a second process" in capsys.readouterr().err
    assert ".lock" not in {p.name for p in (tmp_path / "r").iterdir()}


def test_checkpoint_for_another_arch_is_refused(mini, tmp_path):
    Trainer(tiny(), mini, cfg(), out=tmp_path / "r").fit(until=1)
    other = ResNet(TINY.replace(widths=(8, 16, 16)))
    with pytest.raises(ResgrowError, match="trained for"):
        Trainer(other, mini, cfg(), out=tmp_path / "r", resume=True).fit()


def test_schedules():
    cos = Schedule("cosine", 0.1, 100, eta_min=0.001)
    assert cos(0) == pytest.approx(0.1) and cos(50) == pytest.approx(0.0505) and cos(99.999) == pytest.approx(0.001, abs=1e-6)
    step = Schedule("step", 0.1, 100)
    assert [step(t) for t in (0, 49.9, 50, 75)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    rs = Schedule("cosine_restarts", 0.5, 160, eta_min=0.001, restarts=(60, 110))
    assert rs(59.999) == pytest.approx(0.001, abs=1e-4) and rs(60) == pytest.approx(0.5) and rs(85) == pytest.approx(0.2505)
    grown = Schedule("cosine", 0.5, 100)
    grown.add_restart(40)  # a method restarts the cosine: back to the peak, annealing to the end
    assert grown(40) == pytest.approx(0.5) and grown(70) == pytest.approx(0.25)
    again = Schedule("cosine", 0.5, 100)
    again.load_state_dict(copy.deepcopy(grown.state_dict()))
    assert again(70) == grown(70) and again.state_dict() == grown.state_dict() == {"kind": "cosine_restarts", "restarts": [40.0]}
    # LipGrow's schedule: a reset goes back to the peak and anneals over the rest of the run, so an
    # earlier cycle is cut off at the reset instead of annealing to it (cosine_restarts)
    reset = Schedule("cosine_reset", 0.5, 160, eta_min=0.001, restarts=(27, 83))
    assert reset(26.999) == pytest.approx(Schedule("cosine", 0.5, 160, eta_min=0.001)(26.999)) and reset(27) == pytest.approx(0.5)
    assert reset(82.999) == pytest.approx(Schedule("cosine", 0.5, 133, eta_min=0.001)(55.999))  # 27 -> 160, cut at 83
    assert reset(100) == pytest.approx(Schedule("cosine", 0.5, 77, eta_min=0.001)(17))
    assert Schedule("cosine_restarts", 0.5, 160, restarts=(27, 83))(82.999) == pytest.approx(0, abs=1e-6)
    lip = Schedule("cosine", 0.5, 160, eta_min=0.001)
    lip.add_restart(27, reset=True)  # what lipgrow does at its grows, one after the other
    lip.add_restart(83, reset=True)
    assert lip.state_dict() == reset.state_dict() == {"kind": "cosine_reset", "restarts": [27.0, 83.0]}
    assert all(lip(t) == reset(t) for t in (0, 26.5, 27, 50, 82.999, 83, 159))
    warm = Schedule("cosine", 0.1, 100, warmup=5)
    assert warm(2.5) == pytest.approx(0.5 * Schedule("cosine", 0.1, 100)(2.5))
    assert warm(0) < 1e-8 and warm(5) == pytest.approx(Schedule("cosine", 0.1, 100)(5))
    with pytest.raises(ResgrowError):
        Schedule("step", 0.1, 100).add_restart(10)
    with pytest.raises(ResgrowError, match="unknown schedule"):
        Schedule("linear", 0.1, 10)


def test_compiled_blocks_train_like_eager_and_survive_growth(small, tmp_path):
    """Plumbing of --compile blocks, with dynamo's eager backend (no codegen): same numbers, same names."""
    from resgrow.grow import deepen

    plain = Trainer(tiny(), small, cfg(epochs=2))
    plain.fit(until=1)
    compiled = Trainer(tiny(), small, cfg(epochs=2, compile="blocks", compile_backend="eager"), out=tmp_path / "c")
    compiled.fit(until=1)
    a, b = plain.model.state_dict(), compiled.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    deeper, pmap = deepen(compiled.model, "interpolate")
    compiled.apply_change(Change(deeper, pmap, "grew"))
    assert all(getattr(blk, "_compiled_call_impl", None) is not None for _, _, blk in compiled.model.iter_blocks())
    compiled.fit()
    assert compiled.history[-1]["blocks"] == "2-2-2" and math.isfinite(compiled.history[-1]["train_loss"])
    assert load_checkpoint(tmp_path / "c" / CHECKPOINT)["epoch"] == 2


def test_unknown_compile_mode():
    from resgrow.train.compile import apply_compile

    with pytest.raises(ResgrowError, match="unknown compile mode"):
        apply_compile(tiny(), "everything")


def test_validation_split_and_eval_every(mini):
    from resgrow.data import with_validation

    data = with_validation(mini, 200, seed=0)
    rows = Trainer(tiny(), data, cfg(epochs=3, eval_every=2)).fit()
    assert "test_acc" not in rows[0] and "val_acc" not in rows[0]
    assert {"test_acc", "val_acc", "val_loss"} <= set(rows[1]) and "test_acc" in rows[2]  # the last epoch is always evaluated
    assert 0.0 <= rows[2]["val_acc"] <= 1.0


def test_bf16_autocast_step_runs_on_cpu(mini):
    """The autocast branch of the step (used with graphs on CUDA) also runs eagerly on CPU."""
    from resgrow.data import DeviceLoader, channel_stats
    from resgrow.train import StepRunner, make_sgd

    model = tiny()
    opt = make_sgd(model, 0.05, 0.9, 5e-4, False, fused=False)
    mean, std = channel_stats(mini.train.images)
    loader = DeviceLoader(mini.train, 100, "cpu", mean, std)
    runner = StepRunner(model, opt, loader, amp=True)
    loader.start_epoch(0)
    before = model.stem[0].weight.detach().clone()
    for _ in range(3):
        runner.run()
    loss, acc = runner.read_metrics(3)
    assert math.isfinite(loss) and 0 <= acc <= 1
    assert model.stem[0].weight.dtype == torch.float32 and not torch.equal(model.stem[0].weight, before)


def _run_steps(mini, steps, channels_last=False, prepare=None, make=tiny, **kw):
    """`steps` eager bf16-autocast steps of the tiny net from seed 0; returns the model and its runner."""
    from resgrow.data import DeviceLoader, channel_stats
    from resgrow.train import StepRunner, make_sgd

    model = make()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if prepare:
        prepare(model)
    opt = make_sgd(model, 0.05, 0.9, 5e-4, False, fused=False)
    mean, std = channel_stats(mini.train.images)
    loader = DeviceLoader(mini.train, 50, "cpu", mean, std, channels_last=channels_last)
    runner = StepRunner(model, opt, loader, amp=True, **kw)
    loader.start_epoch(0)
    for _ in range(steps):
        runner.run()
    return model, runner


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_weight_copies_match_autocast_bit_for_bit(mini, channels_last):
    ref, r_ref = _run_steps(mini, 4, channels_last)
    new, r_new = _run_steps(mini, 4, channels_last, bf16_weights=True)
    assert r_new.bf16_copies is not None and len(r_new.bf16_copies.params) == 9  # 7 convs + the linear weight and bias
    for (name, a), b in zip(ref.state_dict().items(), new.state_dict().values()):
        assert torch.equal(a, b), name
    assert r_ref.read_metrics(4) == r_new.read_metrics(4)
    assert all(p.grad is None for p in new.parameters())  # eager steps still end with zero_grad(set_to_none)


def test_bf16_weight_copies_remove_the_per_layer_casts(mini):
    """Counted at the aten level: autocast casts each conv/linear weight forward and back; the copies do not."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    counts = {}
    for flag in (False, True):
        _, runner = _run_steps(mini, 1, bf16_weights=flag)
        with Count() as c:
            runner.run()
        counts[flag] = c.ops
    assert counts[False]["_to_copy"] >= 2 * 9  # each of the 9 weights, forward and backward
    assert counts[True]["_to_copy"] <= counts[False]["_to_copy"] - 2 * 9
    assert counts[True]["_foreach_copy_"] == 2
    assert counts[True]["add_"] == counts[False]["add_"]  # and no BN counter updates in either
    assert counts[False]["add_"] < 7  # TINY has 7 BNs; their counters are not updated


def _grown(kind):
    """The tiny net of `kind` grown 1-1-1 -> 2-1-1 -> 4-2-1, so its stages have h = 1/4, 1/2 and 1, with
    BN affines moved off their initial 1 / 0."""
    from resgrow.grow import deepen

    def make():
        torch.manual_seed(0)
        bottleneck = kind == "bottleneck"
        model = ResNet(ArchSpec(kind, (1, 1, 1), (16, 32, 64) if bottleneck else TINY.widths, stem_width=8,
                                shortcut="B" if bottleneck else "A"))
        for stages in ([0], [0, 1]):
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.uniform_(-0.2, 0.2)
            model, _ = deepen(model, "interpolate", stages=stages)
        return model
    return make


@pytest.mark.parametrize("kind", ["basic", "preact", "bottleneck"])
def test_folded_h_step_matches_autocast_bit_for_bit(mini, kind):
    """h folded into the branch's last BN (or conv) gives the unfolded step's numbers exactly (h = 1/2, 1/4)."""
    ref, r_ref = _run_steps(mini, 3, make=_grown(kind))
    new, r_new = _run_steps(mini, 3, make=_grown(kind), bf16_weights=True)
    assert sorted({b.h for _, _, b in new.iter_blocks()}) == [0.25, 0.5, 1.0]
    assert len(r_new.bf16_copies.folded) == sum(b.h != 1 for _, _, b in new.iter_blocks()) > 0
    for (name, a), b in zip(ref.state_dict().items(), new.state_dict().values()):
        assert torch.equal(a, b), name
    assert r_ref.read_metrics(3) == r_new.read_metrics(3)
    assert not any(b.h_folded for _, _, b in new.iter_blocks())  # eval and the meter see the plain model
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(ref.eval()(x), new.eval()(x))


def test_folded_h_removes_the_per_block_gradient_scaling(mini):
    """Counted at the aten level: unfolded, each block with h != 1 scales its branch's gradient (one mul
    over its activations); folded, two multi-tensor multiplies do it for the whole net."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from resgrow.train.bf16_weights import Bf16Weights

    class Muls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.big, self.foreach = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in ("mul", "mul_") and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
                self.big += 1
            self.foreach += name.startswith("_foreach_mul")
            return func(*args, **(kwargs or {}))

    counts = {}
    for fold in (False, True):
        model, runner = _run_steps(mini, 1, make=_grown("basic"), bf16_weights=True)
        runner.bf16_copies = Bf16Weights(model, fold_h=fold)
        with Muls() as c:
            runner.run()
        counts[fold] = (c.big, c.foreach)
    scaled = sum(b.h != 1 for _, _, b in model.iter_blocks())
    # the rest (the loader's normalisation, SGD's multi-tensor multiplies) is the same in both
    assert counts[False][0] - counts[True][0] == scaled == 6, counts
    assert counts[True][1] - counts[False][1] == 2, counts


def test_blocks_that_cannot_take_folded_h_keep_the_add():
    from resgrow.train.bf16_weights import foldable_blocks

    model = _grown("basic")()
    names = [n for n, _ in foldable_blocks(model)]
    assert len(names) == sum(b.h != 1 for _, _, b in model.iter_blocks())
    blk = dict(model.named_modules())[names[0]]
    blk.bn2.weight.requires_grad_(False)  # frozen: scaling a copy of it would not reach the optimizer anyway
    names2 = [n for n, _ in foldable_blocks(model)]
    assert names[0] not in names2 and len(names2) == len(names) - 1
    blk.bn2.weight.requires_grad_(True)
    blk.use_tensor_h()  # compiled blocks: inductor fuses the scaling
    assert names[0] not in [n for n, _ in foldable_blocks(model)]


def test_bf16_weight_copies_with_compiled_blocks(mini):
    """functional_call hands dynamo fresh bf16 leaves at each capture; the numbers must not change."""
    from resgrow.train.compile import apply_compile

    ref, _ = _run_steps(mini, 3, bf16_weights=True)
    model, _ = _run_steps(mini, 3, prepare=lambda m: apply_compile(m, "blocks", "eager"), bf16_weights=True)
    assert all(getattr(b, "_compiled_call_impl", None) is not None for _, _, b in model.iter_blocks())
    for (name, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_tensorboard_scalars_follow_resume(small, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb_run"
    c = cfg(epochs=4, tensorboard=True, checkpoint_every=2)
    save = Trainer._save
    with pytest.MonkeyPatch.context() as mp:  # the process dies after logging epoch 3, before its checkpoint
        mp.setattr(Trainer, "_save", lambda self: save(self) if self.epoch % 2 == 0 else None)
        Trainer(tiny(), small, c, out=out).fit(until=3)
    Trainer(tiny(), small, c, out=out, resume=True).fit()  # trains epoch 3 again
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    test = acc.Scalars("test_acc")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # a resumed run does not repeat epochs in TensorBoard; values and walltime (= training seconds) match the log
    assert [e.step for e in test] == [1, 2, 3, 4]
    assert [round(e.value, 5) for e in test] == [round(r["test_acc"], 5) for r in rows]
    assert [round(e.wall_time, 3) for e in test] == [r["train_seconds"] for r in rows]


def test_tensorboard_missing_is_one_clear_error(mini, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if not installed
    with pytest.raises(ResgrowError, match=r"pip install 'resgrow\[tensorboard\]'"):
        Trainer(tiny(), mini, cfg(tensorboard=True), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_deterministic_mode_sets_the_process_flags(mini, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        t = Trainer(tiny(), mini, cfg(epochs=1, deterministic=True))
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = t.fit()
        assert math.isfinite(rows[-1]["train_loss"])
        assert not [w for w in caught if "deterministic" in str(w.message)]  # every op of the step has one
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def test_an_unwritable_log_is_one_clear_error(tmp_path):
    from resgrow.report import MetricsLog

    (tmp_path / "metrics.jsonl").mkdir()  # anything that makes the append fail with an OSError
    with pytest.raises(ResgrowError, match="could not write the log .* continue with --resume"):
        MetricsLog(tmp_path).append({"epoch": 1, "train_seconds": 1.0})


@pytest.mark.parametrize("tensor_h", [True, False])
def test_compiled_blocks_take_h_as_an_input(tensor_h, monkeypatch):
    """A growth that only halves h reuses the compiled blocks; with h as a Python float it would
    compile them all again (the control case, which shows the check can fail)."""
    from torch._dynamo.testing import CompileCounter

    from resgrow.grow import deepen
    from resgrow.models.layers import ResidualBlock
    from resgrow.train.compile import apply_compile

    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 5):
        pytest.skip("torch < 2.5 compiles each module instance separately (inline_inbuilt_nn_modules off)")
    if not tensor_h:
        monkeypatch.setattr(ResidualBlock, "use_tensor_h", lambda self: None)
    torch._dynamo.reset()
    counter = CompileCounter()
    torch.manual_seed(0)
    model = tiny()  # 1-1-1: deepening adds blocks of shapes already compiled (stage 0) or zero-branch partners
    x = torch.randn(4, 3, 16, 16)
    apply_compile(model, "blocks", counter)
    model(x).sum().backward()
    deeper, _ = deepen(model, "identity", stages=[0])  # shapes as before: the new block is like stage 0's first
    deeper2, _ = deepen(deeper, "interpolate", stages=[0])  # 2 blocks of h 0.5 in stage 0
    plain = copy.deepcopy(deeper2)
    apply_compile(deeper2, "blocks", counter)
    before = counter.frame_count
    out = deeper2(x)
    out.sum().backward()
    assert deeper2.spec.h[0] == (0.5, 0.5, 0.5, 0.5)
    assert (counter.frame_count == before) == tensor_h
    torch.testing.assert_close(out, plain(x))
    torch._dynamo.reset()


def test_an_imagenet_style_net_trains_on_32x32_images(mini):
    """resnet18's family (7x7 stem + max-pool) on CIFAR-size images reaches 1x1 maps; counting its
    FLOPs with one image in train-mode BN used to fail ('Expected more than 1 value per channel')."""
    torch.manual_seed(0)
    spec = ArchSpec("basic", (1, 1, 1, 1), (8, 16, 32, 64), shortcut="B", stem="imagenet", stem_width=8)
    rows = Trainer(ResNet(spec), mini, cfg(epochs=1)).fit()
    assert rows[-1]["blocks"] == "1-1-1-1" and rows[-1]["flops"] > 0 and math.isfinite(rows[-1]["train_loss"])


@pytest.mark.parametrize("capability,name,amp", [((9, 0), "NVIDIA H100", True), ((8, 0), "NVIDIA A100", True),
                                                  ((7, 5), "Tesla T4", False), ((7, 0), "Tesla V100", False)])
def test_bf16_autocast_only_where_the_gpu_runs_it_natively(monkeypatch, capsys, capability, name, amp):
    from resgrow.train.device import bf16_autocast

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert bf16_autocast(True, torch.device("cuda")) is amp
    said = capsys.readouterr().err
    if amp:
        assert said == ""
    else:  # one line that names the GPU and what the run does instead
        assert said.count("\n") == 1 and f"{name} (compute capability {capability[0]}.{capability[1]}) has no native bf16" in said
        assert said.rstrip().endswith("training in fp32")
    assert bf16_autocast(False, torch.device("cuda")) is False  # --no-amp (a CPU: tests/test_cpu_precision.py)
    assert capsys.readouterr().err == ""  # nothing to say
