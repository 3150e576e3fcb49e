"""Every bad input gets one line on stderr and a non-zero exit, and nothing is overwritten."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from resgrow.cli import main
from resgrow.train import CHECKPOINT, TrainConfig, device, load_checkpoint

ARCH = "cifar_resnet8"  # the smallest registry net: 1-1-1 blocks


def run(capsys, *args):
    rc = main(list(args))
    err = capsys.readouterr().err.strip()
    return rc, err


def train_args(data, out, *extra):
    return ["train", "--arch", ARCH, "--data", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "50",
            "--device", "cpu", "--quiet", *extra]


def one_line_error(rc, err, *words):
    assert rc != 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("resgrow: error:"), err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("args,words", [
    (["--arch", "resnet57"], ["unknown arch 'resnet57'"]),
    (["--method", "magic"], ["unknown method 'magic'"]),
    (["--schedule", "linear"], ["unknown schedule 'linear'"]),
    (["--no-amp", "--bf16-weights"], ["--bf16-weights", "need bf16 autocast"]),
    (["--epochs", "ten"], ["--epochs", "invalid int"]),
    (["--eval-every", "0"], ["eval-every and checkpoint-every must be >= 1"]),
    (["--eval-batch-size", "0"], ["eval batch size"]),
    (["--momentum", "-1"], ["momentum must be in [0, 1)"]),
    (["--wd", "-1"], ["weight decay must be >= 0"]),
    (["--label-smoothing", "2"], ["label smoothing must be in [0, 1)"]),
    (["--warmup", "5"], ["warm-up must be in [0, epochs=2)"]),
    (["--eta-min", "1"], ["eta-min must be in [0, lr=0.1)"]),
    (["--schedule", "step", "--milestones", "300"], ["milestones [300.0] must be inside (0, 2)"]),
    (["--milestones", "1"], ["milestones apply to the step schedule, not 'cosine'"]),
    (["--device", "tpu"], ["unknown device 'tpu'"]),
    (["--stop-after", "0"], ["--stop-after must be an epoch >= 1, not 0"]),  # 0 used to train the whole run
])
def test_bad_options(capsys, small_zip, tmp_path, args, words):
    argv = train_args(small_zip, tmp_path / "r") + args  # argparse: the last occurrence wins
    one_line_error(*run(capsys, *argv), *words)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args,words", [
    (["--arch", "resnet38", "--method", "multilevel", "--schedule", "step"], ["use --schedule cosine"]),
    (["--arch", "resnet38", "--method", "lipgrow", "--start-blocks", "1-1-1"], ["cannot reach 6-6-6 from 1-1-1"]),
    (["--arch", "resnet20", "--method", "multilevel"], ["3-3-3 cannot be reached by doubling"]),
    (["--arch", "resnet50", "--method", "lipgrow"], ["3-4-6-3 cannot be reached by doubling", "or give --partial-growth"]),
    (["--arch", "resnet50", "--method", "multilevel", "--partial-growth", "--start-blocks", "1-5-1-1"],
     ["start blocks 1-5-1-1 exceed the final blocks 3-4-6-3"]),
    (["--arch", "resnet38", "--method", "multilevel", "--start-blocks", "6-6-6"], ["nothing to grow"]),
    (["--arch", "resnet38", "--method", "multilevel", "--grow-at", "1,2"], ["gives 2 epochs but 1 doubling is needed (3-3-3 -> 6-6-6)"]),
    (["--arch", "resnet38", "--method", "multilevel", "--grow-at", "2"], ["inside (0, 2)"]),
    (["--arch", "resnet38", "--method", "multilevel", "--epochs", "1"], ["1 epochs are too few"]),
    (["--arch", "resnet38", "--method", "lipgrow", "--reserve", "2"], ["reserve < epochs"]),
])
def test_method_errors_come_before_the_data_is_read(capsys, tmp_path, args, words):
    # the data path does not exist: an error about the method proves nothing was loaded first
    argv = train_args(tmp_path / "no-such-data.zip", tmp_path / "r") + args
    one_line_error(*run(capsys, *argv), *words)
    assert not (tmp_path / "r").exists()


def test_a_cuda_device_the_machine_lacks_is_one_line(capsys, small_zip, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with two GPUs, as far as resgrow asks
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    one_line_error(*run(capsys, *train_args(small_zip, tmp_path / "r"), "--device", "cuda:2"),
                   "device 'cuda:2' requested but this machine has 2 CUDA devices (cuda:0 to cuda:1)")
    assert not (tmp_path / "r").exists()


def test_ctrl_c_says_what_the_run_can_go_on_from(capsys, small_zip, tmp_path, monkeypatch):
    from resgrow.train.trainer import Trainer

    real, calls = Trainer._train_epoch, []

    def interrupted_at_the_second_epoch(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(self)

    out = tmp_path / "r"
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    rc, err = run(capsys, *train_args(small_zip, out))
    assert rc == 130 and err == ("resgrow: interrupted; no epoch had ended, so there is no checkpoint: "
                                 "the same command starts the run again"), err
    monkeypatch.setattr(Trainer, "_train_epoch", interrupted_at_the_second_epoch)
    rc, err = run(capsys, *train_args(small_zip, out))  # the same command, as the line says
    assert rc == 130 and err.splitlines() == [
        f"{out} holds a run that stopped before its first epoch ended: starting it again",
        f"resgrow: interrupted; the last checkpoint is kept (continue with: resgrow train --resume --out {out})"], err
    monkeypatch.setattr(Trainer, "_train_epoch", real)
    assert main(train_args(small_zip, out, "--resume")) == 0


def test_unknown_dataset_and_missing_path(capsys, tmp_path):
    one_line_error(*run(capsys, *train_args("imagenet22k", tmp_path / "r")), "'imagenet22k' does not exist", "cifar10")
    one_line_error(*run(capsys, *train_args(tmp_path / "nope.zip", tmp_path / "r")), "does not exist")


def test_bad_zips(capsys, tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("train/a/0.jpg", b"garbage")
        z.writestr("test/a/0.jpg", b"garbage")
    one_line_error(*run(capsys, *train_args(bad, tmp_path / "r")), "cannot decode train/a/0.jpg")
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as z:
        z.writestr("0.jpg", b"x")
    one_line_error(*run(capsys, *train_args(flat, tmp_path / "r")), "no train/ and test/ (or val/) class folders")


def test_run_dir_resume_and_checkpoint_errors(capsys, small_zip, tmp_path):
    out = tmp_path / "r"
    assert main(train_args(small_zip, out, "--stop-after", "1")) == 0
    said = capsys.readouterr().out
    assert said.startswith("stopped after epoch 1/2 (--stop-after)") and f"continue with: resgrow train --resume --out {out}" in said, said
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_line_error(*run(capsys, *train_args(small_zip, out)), "already exists and is not empty", "--resume")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched

    one_line_error(*run(capsys, *train_args(small_zip, tmp_path / "missing", "--resume")),
                   f"cannot resume: run directory {tmp_path / 'missing'} does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(*run(capsys, *train_args(small_zip, tmp_path / "empty", "--resume")), "has no checkpoint.pt")
    (tmp_path / "a_file").write_text("")  # the data path does not exist either: the run directory is said first
    one_line_error(*run(capsys, *train_args(tmp_path / "no-such-data.zip", tmp_path / "a_file" / "r")),
                   "cannot create run directory", "a_file is not a writable directory")
    one_line_error(*run(capsys, *train_args(small_zip, out, "--resume", "--arch", "resnet20")), "trained for cifar_resnet8")

    ck = out / CHECKPOINT
    good = ck.read_bytes()
    ck.write_bytes(good[: len(good) // 3])
    one_line_error(*run(capsys, *train_args(small_zip, out, "--resume")), "unreadable")
    data = bytearray(good)
    weight = load_checkpoint_bytes(good)["model"]["stem.1.weight"]  # a BN's: stored alike in any memory layout
    i = data.find(weight.numpy().tobytes()[:32])
    assert i > 0
    data[i + 3] ^= 0x01
    ck.write_bytes(bytes(data))
    one_line_error(*run(capsys, *train_args(small_zip, out, "--resume")), "corrupt or was modified")
    ck.write_bytes(good)
    assert main(train_args(small_zip, out, "--resume")) == 0
    assert load_checkpoint(ck)["epoch"] == 2


def load_checkpoint_bytes(b: bytes):
    import io
    return torch.load(io.BytesIO(b), weights_only=True)


def test_resume_takes_the_run_settings_and_refuses_different_ones(capsys, small_zip, mini_zip, tmp_path):
    """`--resume --out DIR` alone continues a run (what the stop message tells the user to type); a
    training setting or method option that differs from the run's is one line, not silently ignored."""
    out = tmp_path / "r"
    first = train_args(small_zip, out, "--arch", "cifar_resnet14", "--epochs", "3", "--method", "lipgrow",
                       "--start-blocks", "1-1-1", "--lip-window", "1", "--reserve", "1", "--stop-after", "1")
    assert main(first) == 0
    assert "continue with: resgrow train --resume --out " + str(out) in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["command"] == "resgrow " + " ".join(first)  # the argv given
    before = (out / CHECKPOINT).read_bytes()
    for args, words in [
        (["--epochs", "5", "--lr", "0.5"], ["keeps the settings it started with", "--epochs 5 (the run's: 3)",
                                            "--lr 0.5 (the run's: 0.1)"]),
        (["--no-augment", "--wd", "1e-4"], ["--no-augment (the run was started without it)", "--wd 0.0001 (the run's: 0.0005)"]),
        (["--restarts", "2"], ["--restarts 2 (the run's: none)"]),
        (["--lip-window", "2"], ["keeps the settings it started with", "--lip-window 2 (the run's: 1)"]),
        (["--partial-growth"], ["keeps the settings it started with", "--partial-growth True (the run's: False)"]),
        (["--method", "multilevel"], ["trained with method 'lipgrow', not 'multilevel'"]),
        (["--grow-at", "2"], ["--grow-at does not apply to method 'lipgrow'"]),
    ]:
        one_line_error(*run(capsys, "train", "--resume", "--out", str(out), *args), *words)
    assert (out / CHECKPOINT).read_bytes() == before  # nothing touched
    one_line_error(*run(capsys, "train", "--out", str(tmp_path / "new"), "--data", str(small_zip)),
                   "required: --arch (only --resume may leave them out)")
    # other images under --data: refused by content; the same data at a new path: fine, and recorded
    one_line_error(*run(capsys, "train", "--resume", "--out", str(out), "--data", str(mini_zip), "--quiet"),
                   "trained on other images")
    moved = tmp_path / "moved.zip"
    moved.write_bytes(small_zip.read_bytes())
    # the same settings given again are fine; left out, they come from the run (arch, method and its options)
    assert main(["train", "--resume", "--out", str(out), "--stop-after", "2", "--lip-window", "1", "--lr", "0.1",
                 "--data", str(moved)]) == 0
    assert "method lipgrow(start 1-1-1, threshold 1.4, window 1, reserve 1)" in capsys.readouterr().err
    assert load_checkpoint(out / CHECKPOINT)["run_info"]["data"] == str(moved)
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["blocks"] for r in rows] == ["1-1-1", "1-1-1", "2-2-2"]  # the run's reserve 1: grown after epoch 2 at the latest


def test_diverging_run_exits_cleanly(capsys, small_zip, tmp_path):
    rc, err = run(capsys, *train_args(small_zip, tmp_path / "r", "--lr", "1e30"))
    one_line_error(rc, err, "training loss became", "stopped")
    assert rc == 3


def test_cli_train_and_bench_output(capsys, small_zip, tmp_path):
    assert main(train_args(small_zip, tmp_path / "r")) == 0
    out = capsys.readouterr().out
    assert "final epoch 2: test accuracy" in out
    assert main(["bench", "--arch", ARCH, "--batch-size", "32", "--steps", "4", "--device", "cpu", "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "eager fp32" in out and "img/s" in out and (tmp_path / "b.json").is_file()
    for bad in (["--steps", "0"], ["--batch-size", "0"]):
        one_line_error(*run(capsys, "bench", "--arch", ARCH, "--device", "cpu", *bad), "must be >= 1")
    one_line_error(*run(capsys, "bench", "--arch", ARCH, "--device", "cpu", "--h", "0"), "--h must be in (0, 1]")
    one_line_error(*run(capsys, "eval", str(tmp_path / "r"), "--batch-size", "0"), "--batch-size must be >= 1")


def test_eval_a_run_and_its_errors(capsys, small_zip, tmp_path):
    import json

    out = tmp_path / "r"
    assert main(train_args(small_zip, out)) == 0
    capsys.readouterr()
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert main(["eval", str(out), "--device", "cpu", "--json", str(tmp_path / "e.json")]) == 0
    assert f"test accuracy {last['test_acc']:.2%}" in capsys.readouterr().out
    got = json.loads((tmp_path / "e.json").read_text())
    assert got["acc"] == last["test_acc"] and got["loss"] == pytest.approx(last["test_loss"], rel=1e-6)
    assert got["images"] == 100 and got["epoch"] == 2

    one_line_error(*run(capsys, "eval", str(out), "--split", "val"), "no val split", "--val-size")
    one_line_error(*run(capsys, "eval", str(tmp_path / "nope")), "no run directory or checkpoint")
    other = tmp_path / "other.zip"  # same images, one class renamed
    with zipfile.ZipFile(small_zip) as src, zipfile.ZipFile(other, "w") as dst:
        for name in src.namelist():
            dst.writestr(name.replace("/airplane/", "/plane/"), src.read(name))
    one_line_error(*run(capsys, "eval", str(out), "--data", str(other)), "trained on classes [airplane")


def test_image_size_for_mixed_data_carries_to_resume_and_eval(capsys, small_zip, tmp_path):
    import io
    import json

    from PIL import Image

    mixed = tmp_path / "mixed.zip"  # every other image enlarged to 40x40: the sizes differ
    with zipfile.ZipFile(small_zip) as src, zipfile.ZipFile(mixed, "w") as dst:
        for i, name in enumerate(sorted(src.namelist())):
            data = src.read(name)
            if i % 2 and name.endswith(".jpg"):
                buf = io.BytesIO()
                Image.open(io.BytesIO(data)).resize((40, 40)).save(buf, "JPEG")
                data = buf.getvalue()
            dst.writestr(name, data)
    out = tmp_path / "r"
    one_line_error(*run(capsys, *train_args(mixed, out)), "differ in size", "--image-size")
    assert main(train_args(mixed, out, "--image-size", "24", "--stop-after", "1")) == 0
    assert main(train_args(mixed, out, "--resume")) == 0  # the stored image size, not the command's (none)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    info = json.loads((out / "run.json").read_text())
    assert len(rows) == 2 and info["image_size"] == 24
    assert info["config"]["bf16_weights"] is True  # the default; it only acts under bf16 autocast (CUDA)
    capsys.readouterr()
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    assert f"test accuracy {rows[-1]['test_acc']:.2%}" in capsys.readouterr().out
    # other data at another size: the error names the size and the option that fixes it
    one_line_error(*run(capsys, "eval", str(out), "--device", "cpu", "--data", str(mixed), "--image-size", "16"),
                   "trained on 3x24x24 images (CxHxW), mixed has 3x16x16; --image-size 24")
    assert main(["eval", str(out), "--device", "cpu", "--data", str(mixed), "--image-size", "24"]) == 0


def _env():
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_killed_run_resumes_to_the_same_weights(small_zip, tmp_path):
    """SIGKILL a real training process mid-run, resume it, and compare with an uninterrupted run."""
    args = lambda out: [sys.executable, "-m", "resgrow"] + train_args(small_zip, out)[:-1] + ["--epochs", "4", "--quiet"]  # noqa: E731
    subprocess.run(args(tmp_path / "full"), check=True, env=_env(), capture_output=True)
    victim = subprocess.Popen(args(tmp_path / "part"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "part" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed; make it longer"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert load_checkpoint(tmp_path / "part" / CHECKPOINT)["epoch"] in (1, 2, 3)
    subprocess.run(args(tmp_path / "part") + ["--resume"], check=True, env=_env(), capture_output=True)
    a = load_checkpoint(tmp_path / "full" / CHECKPOINT)
    b = load_checkpoint(tmp_path / "part" / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_sigterm_ends_the_epoch_with_a_checkpoint(small_zip, tmp_path, sig):
    """A scheduler's SIGTERM (or the SIGUSR1 a Slurm job asks for before its limit): the epoch in progress
    finishes and is checkpointed even with --checkpoint-every 100; exit 128 + the signal; --resume finishes the run."""
    out = tmp_path / "r"
    args = [sys.executable, "-m", "resgrow"] + train_args(small_zip, out)[:-1] + ["--epochs", "5", "--quiet",
                                                                                 "--checkpoint-every", "100"]
    victim = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None and not (log.is_file() and log.read_text().strip()):
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be stopped; make it longer"
    victim.send_signal(sig)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 128 + sig, err
    rows = log.read_text().splitlines()
    epoch = load_checkpoint(out / CHECKPOINT)["epoch"]
    assert 1 <= epoch < 5 and len(rows) == epoch
    assert f"stopped on {sig.name} after epoch {epoch}/5" in err and "Traceback" not in err
    done = subprocess.run(args + ["--resume"], env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(out / CHECKPOINT)["epoch"] == 5


def test_an_unwritable_run_directory_is_one_line(capsys, small_zip, tmp_path):
    parent = tmp_path / "base"
    parent.mkdir()
    (parent / "runs").write_text("a file where the run's parent folder should be")
    one_line_error(*run(capsys, *train_args(small_zip, parent / "runs" / "r")), "runs")


def test_out_of_gpu_memory_is_one_line_that_keeps_the_checkpoint(capsys, small_zip, tmp_path, monkeypatch):
    from resgrow.train.trainer import Trainer

    out = tmp_path / "r"
    assert main(train_args(small_zip, out, "--stop-after", "1")) == 0
    capsys.readouterr()
    kept = (out / CHECKPOINT).read_bytes()

    def oom(self, until=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total "
                                          "capacity of 79.19 GiB of which 3.06 MiB is free. Including non-PyTorch ...")

    real_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", oom)
    one_line_error(*run(capsys, *train_args(small_zip, out, "--resume")), "Tried to allocate 20.00 MiB.",
                   "smaller --batch-size", "--resume")
    assert (out / CHECKPOINT).read_bytes() == kept
    monkeypatch.setattr(Trainer, "fit", lambda self, until=None: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # other errors are not dressed up as user errors
        main(train_args(small_zip, out, "--resume"))
    monkeypatch.setattr(Trainer, "fit", real_fit)
    assert main(train_args(small_zip, out, "--resume", "--eval-batch-size", "7")) == 0  # the fix the message names
    assert load_checkpoint(out / CHECKPOINT)["config"]["eval_batch_size"] == 7


NOT_A_MODEL = """
def not_a_model(num_classes=10):
    return "nope"


def no_classes():
    raise AssertionError("never called: the signature is checked first")
"""


def test_a_model_of_your_own_from_the_command_line(capsys, small_zip, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "examples"))  # examples/my_nets.py
    (tmp_path / "broken_nets.py").write_text(NOT_A_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "r"
    own = ["--arch", "my_nets:small_cnn"]
    assert main(train_args(small_zip, out, *own, "--stop-after", "1")) == 0
    assert main(train_args(small_zip, out, *own, "--resume")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["model"] == "Sequential"
    assert json.loads((out / "run.json").read_text())["arch"] == "my_nets:small_cnn"
    capsys.readouterr()
    assert main(["eval", str(out), "--device", "cpu", *own]) == 0
    said = capsys.readouterr().out
    assert f"test accuracy {rows[-1]['test_acc']:.2%}" in said and "epoch 2/2, Sequential" in said, said
    one_line_error(*run(capsys, "eval", str(out), "--device", "cpu"), "of your own", "--arch")
    assert main(["bench", *own, "--batch-size", "16", "--steps", "2", "--device", "cpu"]) == 0
    assert "eager fp32" in capsys.readouterr().out
    one_line_error(*run(capsys, "bench", *own, "--h", "0.5"), "use it with a registry --arch")

    for args, words in [(["--arch", "no_such_module_xyz:net"], ["cannot import 'no_such_module_xyz'"]),
                        (["--arch", "my_nets:missing"], ["has no function 'missing'"]),
                        (["--arch", "my_nets:small_cnn", "--method", "lipgrow"], ["needs a resgrow ResNet", "Sequential"]),
                        (["--arch", "my_nets:slim_resnet", "--method", "multilevel", "--start-blocks", "3-3-3"],
                         ["cannot reach 4-4-4 from 3-3-3"]),
                        (["--arch", "broken_nets:not_a_model"], ["returned a str, not a torch.nn.Module"]),
                        (["--arch", "broken_nets:no_classes"], ["calls no_classes(num_classes=10), which its signature"])]:
        one_line_error(*run(capsys, *train_args(small_zip, tmp_path / "bad", *args)), *words)
        assert not (tmp_path / "bad").exists()
    for args, words in [(["--method", "lipgrow"], ["needs a resgrow ResNet", "Sequential"]),
                        (["--method", "multilevel", "--start-blocks", "3-3-3"], ["cannot reach 4-4-4 from 3-3-3"])]:
        arch = ["--arch", "my_nets:small_cnn" if "lipgrow" in args else "my_nets:slim_resnet"]
        # checked before any data is read: the growth error comes first, not the missing data path's
        one_line_error(*run(capsys, *train_args(tmp_path / "no_such.zip", tmp_path / "bad", *arch, *args)), *words)
    grown = tmp_path / "grown"  # a function returning a resgrow ResNet: the growth methods work on it
    assert main(train_args(small_zip, grown, "--arch", "my_nets:slim_resnet", "--method", "multilevel",
                           "--start-blocks", "2-2-2")) == 0
    rows = [json.loads(line) for line in (grown / "metrics.jsonl").read_text().splitlines()]
    assert [r["blocks"] for r in rows] == ["2-2-2", "4-4-4"] and rows[-1]["widths"] == "8-16-32"


def test_a_run_started_under_older_rules_still_resumes(capsys, small_zip, tmp_path):
    from resgrow.train import save_checkpoint

    out = tmp_path / "r"
    assert main(train_args(small_zip, out, "--stop-after", "1")) == 0
    ck = load_checkpoint(out / CHECKPOINT)
    ck["config"]["milestones"] = [1.0]  # ignored by its cosine schedule; today's validation refuses it for new runs
    save_checkpoint(ck, out / CHECKPOINT)
    assert main(train_args(small_zip, out, "--resume")) == 0
    assert load_checkpoint(out / CHECKPOINT)["epoch"] == 2
    capsys.readouterr()
    one_line_error(*run(capsys, *train_args(small_zip, tmp_path / "new", "--milestones", "1")), "milestones apply")


def test_models_and_methods_catalogues(capsys):
    assert main(["models"]) == 0
    rows = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    from resgrow.models import list_models

    assert set(list_models()) <= set(rows)  # every registered name, with its size
    assert "| 9-9-9 | 16-32-64 | A | 0.85M | 251 at 32x32 |" in rows["resnet56"]  # He et al.: 0.85M
    assert "| 0.27M |" in rows["resnet20"] and "| 36.48M |" in rows["wrn28_10"] and "at 224x224" in rows["resnet50"]
    one_line_error(*run(capsys, "models", "--classes", "0"), "--classes must be >= 1")

    from resgrow.methods import METHODS

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, cls in METHODS.items():
        assert f"\n{name}\n" in f"\n{out}" and all(o.flag in out for o in cls.options())
    assert "Chang" in out and "ICML 2020" in out and "options: --start-blocks, --grow-at" in out
    assert main(["methods", "lipgrow"]) == 0
    card = capsys.readouterr().out
    assert card.startswith("Method card: lipgrow") and "Defaults: threshold 1.4" in card and "When it helps" in card
    one_line_error(*run(capsys, "methods", "magic"), "unknown method 'magic'", "lipgrow")


def test_bf16_weight_copies_are_on_unless_turned_off():
    from resgrow.cli import build_parser

    def parse(*extra):
        return build_parser().parse_args(["train", "--arch", "resnet20", "--data", "d", "--out", "o", *extra]).bf16_weights

    assert parse() is None and parse("--bf16-weights") is True and parse("--no-bf16-weights") is False
    assert TrainConfig().bf16_weights is True


def test_output_cut_short_by_a_pipe_ends_quietly():
    """`resgrow compare ... | head`: once the reader has gone, no error line, the exit code of SIGPIPE."""
    many_lines = ("import sys, resgrow.cli as cli\n"
                  "cli._models = lambda a: [print('x' * 99) for _ in range(20000)] and 0  # 2 MB, more than a pipe holds\n"
                  "sys.exit(cli.main(['models']))")
    p = subprocess.Popen([sys.executable, "-c", many_lines], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.read(100) == b"x" * 99 + b"\n"
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == ""


def test_a_cut_short_checkpoint_falls_back_to_the_one_before_it(capsys, small_zip, tmp_path):
    out = tmp_path / "r"
    assert main(train_args(small_zip, out, "--epochs", "3", "--stop-after", "2")) == 0
    assert load_checkpoint(out / "checkpoint.prev.pt")["epoch"] == 1 and load_checkpoint(out / CHECKPOINT)["epoch"] == 2
    good = (out / CHECKPOINT).read_bytes()
    (out / CHECKPOINT).write_bytes(good[: len(good) // 2])  # a copy cut short
    capsys.readouterr()
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr()
    assert "model of epoch 1/3" in said.out and "going on from the checkpoint before it" in said.err
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "checkpoint before it" in line] == [
        f"checkpoint {out / CHECKPOINT} is unreadable (truncated or not a resgrow checkpoint: RuntimeError); going on "
        f"from the checkpoint before it, {out / 'checkpoint.prev.pt'} (epoch 1)"], err
    rows = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3] and load_checkpoint(out / CHECKPOINT)["epoch"] == 3


def test_a_run_records_its_data_path_so_it_resumes_and_evaluates_from_anywhere(capsys, small_zip, tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    (work / "data.zip").write_bytes(small_zip.read_bytes())
    monkeypatch.chdir(work)
    assert main(train_args("data.zip", "run", "--stop-after", "1")) == 0
    assert json.loads((work / "run" / "run.json").read_text())["data"] == str(work / "data.zip")
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(work / "run"), "--device", "cpu"]) == 0
    (work / "data.zip").rename(work / "moved.zip")
    capsys.readouterr()
    for args in (["eval", str(work / "run"), "--device", "cpu"], ["train", "--resume", "--out", str(work / "run")]):
        one_line_error(*run(capsys, *args), f"data path {str(work / 'data.zip')!r} (recorded by", "pass --data")
    assert main(["train", "--resume", "--out", str(work / "run"), "--data", str(work / "moved.zip"), "--quiet"]) == 0


def test_resgrow_alone_and_help_say_what_there_is_with_defaults(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: resgrow") and all(c in err for c in ("train", "compare", "eval", "bench", "models"))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())
    for flag, default in (("--epochs EPOCHS", "160"), ("--batch-size BATCH_SIZE", "128"), ("--lr LR", "0.1"),
                          ("--momentum MOMENTUM", "0.9"), ("--eta-min ETA_MIN", "0.0")):
        assert f"(default {default})" in text.split(flag, 1)[1].split(" --", 1)[0], flag
    import argparse

    from resgrow.cli import build_parser

    train = next(a for a in build_parser(methods=True)._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    assert [a.dest for a in train._actions if not a.help] == []  # every option says what it does
    assert {"--grow-at", "--lip-window"} <= {s for a in train._actions for s in a.option_strings}  # the methods' too


def test_bench_on_a_cpu_times_its_variants_and_names_the_cpu(capsys):
    assert main(["bench", "--arch", ARCH, "--batch-size", "8", "--steps", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = ["eager fp32", "eager fp32 channels_last", "eager bf16", "eager bf16 channels_last"]
    assert [line[:68].strip() for line in out[2:6]] == names
    assert out[6].startswith("resgrow train's default fast path on this CPU (eager ")
    assert " threads, torch " in out[7] and ("native bf16 (" in out[7] or "no native bf16" in out[7])
    assert main(["bench", "--arch", ARCH, "--batch-size", "8", "--steps", "1", "--device", "cpu",
                 "--widths", "8-16-32"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{ARCH} at 8-16-32 (stem 8)  batch 8")
    assert out[6].startswith("resgrow train's default fast path on this CPU (eager ")
    # at 8-16-32 NCHW only where the CPU has AMX (device.channels_last_suits)
    assert ("channels_last" in out[6]) is not device.nchw_at_odd_widths(torch.device("cpu"))
    for bad, says in ((["--widths", "8-16"], "need one per stage"), (["--widths", "8-x-32"], "must look like 16-32-64"),
                      (["--widths", "0-16-32"], "must be positive")):
        one_line_error(*run(capsys, "bench", "--arch", ARCH, "--device", "cpu", *bad), says)


def test_help_and_the_catalogues_start_without_loading_torch_where_they_need_none():
    code = "import sys, resgrow.cli as c; c.build_parser().format_help(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src")))
    assert done.stdout.strip() == "False", done.stderr


def test_a_method_declares_its_options_once_and_the_command_line_follows(capsys, small_zip, tmp_path, monkeypatch):
    """A new method is its own class and one registry line: its flag, help, card and resume check come from
    its declaration, with nothing added to the command line's code."""
    from dataclasses import dataclass

    from resgrow.methods import METHODS, Method, MethodOptions, option

    @dataclass(frozen=True)
    class PatientOptions(MethodOptions):
        patience: int = option(3, "epochs to wait")

    class Patient(Method):
        """Method card: patient, a fixed-size method that only counts epochs until it would act."""

        name = "patient"
        Options = PatientOptions

    monkeypatch.setitem(METHODS, "patient", Patient)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "patient: epochs to wait (default 3)" in " ".join(capsys.readouterr().out.split())
    assert main(["methods", "patient"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("Options:\n  --patience: epochs to wait (default 3)")
    out = tmp_path / "r"
    assert main(train_args(small_zip, out, "--method", "patient", "--patience", "5", "--stop-after", "1")) == 0
    one_line_error(*run(capsys, "train", "--resume", "--out", str(out), "--patience", "4"),
                   "keeps the settings it started with", "--patience 4 (the run's: 5)")
    one_line_error(*run(capsys, *train_args(small_zip, tmp_path / "b", "--patience", "4")),
                   "--patience does not apply to method 'baseline'")


def test_a_run_resumed_on_another_machine_says_so_and_records_where_each_part_trained(capsys, small_zip, tmp_path,
                                                                                       monkeypatch):
    import resgrow.train.trainer as trainer_module
    from resgrow.report import load_run, protocol_warnings

    out = tmp_path / "r"
    assert main(train_args(small_zip, out, "--epochs", "3", "--stop-after", "1")) == 0
    assert main(train_args(small_zip, out, "--epochs", "3", "--resume", "--stop-after", "2")) == 0
    here = json.loads((out / "run.json").read_text())
    assert "machines" not in here and "another machine" not in capsys.readouterr().err  # the same machine: no history
    monkeypatch.setattr(trainer_module, "cpu_name", lambda: "Another CPU")
    assert main(train_args(small_zip, out, "--epochs", "3", "--resume")) == 0
    err = capsys.readouterr().err
    assert f"resumed on another machine than epochs 1-2 trained on ({here['cpu']}, {here['threads']} threads" in err
    machines = json.loads((out / "run.json").read_text())["machines"]
    assert [(m["cpu"], m["from_epoch"]) for m in machines] == [(here["cpu"], 0), ("Another CPU", 2)]
    said = [w for w in protocol_warnings([load_run(out)]) if "machines" in w]
    assert len(said) == 1 and said[0].startswith(f"r trained on 2 machines ({here['cpu']}, ") and \
        "Another CPU" in said[0] and said[0].endswith("from epoch 2): its time mixes their speeds")
