"""Runs trained together in one process (threads) train exactly as they would alone, and say they shared."""

import json
import time

import pytest
import torch

from conftest import cfg, weights
from conftest import tiny as model
from resgrow import __version__
from resgrow.cli import main
from resgrow.errors import ResgrowError
from resgrow.methods import Method, build_method
from resgrow.models import ArchSpec, ResNet
from resgrow.report.compare import compare_table, load_run, protocol_warnings, seeds_table
from resgrow.train import Trainer
from resgrow.train.together import fit_together


def grower(seed):
    torch.manual_seed(seed)
    return ResNet(ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8))


def _runs(mini, root):
    """A baseline with seed 0 and a multilevel run with seed 1 (it grows 1-1-1 -> 2-2-2 at epoch 2)."""
    return [Trainer(model(0), mini, cfg(seed=0), out=root / "a"),
            Trainer(grower(1), mini, cfg(seed=1), method=build_method("multilevel", grow_at=(2,)), out=root / "b")]


def test_runs_together_train_as_they_would_alone(mini, tmp_path):
    alone = _runs(mini, tmp_path / "alone")
    for t in alone:
        t.fit()
    together = _runs(mini, tmp_path / "together")
    results = fit_together(together)
    assert all(isinstance(r, list) and len(r) == 3 for r in results), results
    assert together[1].history[-1]["blocks"] == "2-2-2"  # the grown run changed size inside its thread
    for a, b in zip(alone, together):
        wa, wb = weights(a), weights(b)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert [r["test_acc"] for r in a.history] == [r["test_acc"] for r in b.history]
    info = json.loads((tmp_path / "together" / "a" / "run.json").read_text())
    assert info["shared_device"] == [str(tmp_path / "together" / "b")]
    assert "shared_device" not in json.loads((tmp_path / "alone" / "a" / "run.json").read_text())


def test_a_run_started_alone_and_resumed_together_says_so(mini, tmp_path):
    Trainer(model(0), mini, cfg(), out=tmp_path / "a").fit(until=1)
    assert "shared_device" not in json.loads((tmp_path / "a" / "run.json").read_text())
    results = fit_together([Trainer(model(0), mini, cfg(), out=tmp_path / "a", resume=True),
                            Trainer(model(1), mini, cfg(), out=tmp_path / "b")])
    assert all(isinstance(r, list) for r in results), results
    assert json.loads((tmp_path / "a" / "run.json").read_text())["shared_device"] == [str(tmp_path / "b")]


def test_a_run_in_use_elsewhere_is_refused_and_its_run_json_left_alone(mini, tmp_path):
    from resgrow.train.run_lock import RunLock

    Trainer(model(0), mini, cfg(), out=tmp_path / "a").fit(until=1)
    before = (tmp_path / "a" / "run.json").read_text()
    other = RunLock(tmp_path / "a")
    other.acquire()  # as another process training it would
    try:
        results = fit_together([Trainer(model(0), mini, cfg(), out=tmp_path / "a", resume=True),
                                Trainer(model(1), mini, cfg(), out=tmp_path / "b")])
    finally:
        other.release()
    assert isinstance(results[0], ResgrowError) and "in use" in str(results[0]) and isinstance(results[1], list)
    assert (tmp_path / "a" / "run.json").read_text() == before


class Clock(Method):
    """Notes when each of its run's epochs ended."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_epoch_end(self, ctx):
        self.ends.append(time.perf_counter())


def test_runs_together_overlap_in_time(mini, tmp_path):
    a, b = Clock(), Clock()
    fit_together([Trainer(model(0), mini, cfg(epochs=2), method=a, out=tmp_path / "a"),
                  Trainer(model(1), mini, cfg(epochs=2), method=b, out=tmp_path / "b")])
    # one after another, one run's last epoch would end before the other's first
    assert a.ends[0] < b.ends[-1] and b.ends[0] < a.ends[-1], (a.ends, b.ends)


class Broken(Method):
    def on_epoch_end(self, ctx):
        if ctx.epoch == 1:
            raise ResgrowError("broken on purpose")


def test_one_failing_run_does_not_stop_the_other(mini, tmp_path):
    good = Trainer(model(0), mini, cfg(), out=tmp_path / "good")
    bad = Trainer(model(1), mini, cfg(), method=Broken(), out=tmp_path / "bad")
    results = fit_together([good, bad])
    assert isinstance(results[0], list) and len(results[0]) == 3
    assert isinstance(results[1], ResgrowError) and "on purpose" in str(results[1])
    assert good.epoch == 3 and bad.epoch == 1


def test_a_model_that_draws_random_numbers_is_warned_about(mini, tmp_path, capsys):
    nn = torch.nn

    class Functional(nn.Module):  # dropout by a call in forward, no nn.Dropout module to find
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 10)

        def forward(self, x):
            x = nn.functional.dropout(self.conv(x), 0.2, self.training)
            return self.fc(x.mean((2, 3)))

    drop = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Dropout(0.0), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    fit_together([Trainer(drop, mini, cfg(epochs=1), out=tmp_path / "drop"),
                  Trainer(Functional(), mini, cfg(epochs=1), out=tmp_path / "functional"),
                  Trainer(plain, mini, cfg(epochs=1), out=tmp_path / "plain"),
                  Trainer(model(0), mini, cfg(epochs=1), out=tmp_path / "resnet")])
    warned = sorted(line for line in capsys.readouterr().err.splitlines() if "warning" in line)
    assert [w.split(":")[0] for w in warned] == ["drop", "functional"], warned
    assert "its model draws random numbers as it trains" in warned[0]


def test_together_refuses_what_cannot_share_a_process(mini, tmp_path):
    a = Trainer(model(0), mini, cfg(), out=tmp_path / "same")
    b = Trainer(model(1), mini, cfg(), out=tmp_path / "same")
    with pytest.raises(ResgrowError, match="the same directory"):
        fit_together([a, b])
    c = Trainer(model(0), mini, cfg(), out=tmp_path / "c")
    d = Trainer(model(1), mini, cfg(), out=tmp_path / "d")
    d.cfg.deterministic = True
    with pytest.raises(ResgrowError, match="deterministic"):
        fit_together([c, d])


def _train(data, out, seed, *extra):
    return (f"--arch cifar_resnet8 --data {data} --out {out} --epochs 2 --batch-size 50 --device cpu --quiet "
            f"--seed {seed} {' '.join(extra)}")


def test_cli_together_trains_stops_resumes_and_compare_warns(capsys, small_zip, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["together", _train(small_zip, a, 0, "--stop-after 1"), _train(small_zip, b, 1, "--stop-after 1")]) == 0
    out = capsys.readouterr().out
    assert out.count("stopped after epoch 1/2") == 2, out
    # resumed together, with the command each run was started with
    assert main(["together", _train(small_zip, a, 0, "--resume"), _train(small_zip, b, 1, "--resume")]) == 0
    assert capsys.readouterr().out.count("final epoch 2") == 2
    for d, other in ((a, b), (b, a)):
        info = json.loads((d / "run.json").read_text())
        assert info["shared_device"] == [str(other)]
        assert [json.loads(x)["epoch"] for x in (d / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    warnings = protocol_warnings([load_run(a), load_run(b)])
    assert any("a trained alongside b on one device" in w and "not its time" in w for w in warnings), warnings
    # the table marks their times and takes no time ratio, against a run trained alone or between themselves
    assert main(["train", *_train(small_zip, tmp_path / "alone", 0).split()]) == 0
    table = compare_table([load_run(tmp_path / "alone"), load_run(a), load_run(b)])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()[2:]}
    assert rows["alone"][5] == "1.00x" and rows["a"][5] == rows["b"][5] == "-", table
    assert rows["a"][4].endswith("(shared GPU)") and not rows["alone"][4].endswith("(shared GPU)")
    seeds = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in
             seeds_table([load_run(tmp_path / "alone"), load_run(a)]).splitlines()[2:]}
    assert seeds["alone"][5] == "1.00x" and seeds["a"][5] == "-" and seeds["a"][4].endswith("(shared GPU)"), seeds
    shared_first = compare_table([load_run(a), load_run(tmp_path / "alone")])  # no clock of its own to compare with
    assert shared_first.splitlines()[3].split(" | ")[5] == "-", shared_first


def test_cli_together_names_the_run_on_every_line(capsys, small_zip, tmp_path):
    loud = lambda out, seed: _train(small_zip, out, seed).replace(" --quiet", "")  # noqa: E731
    assert main(["together", loud(tmp_path / "a", 0), loud(tmp_path / "b", 1)]) == 0
    err = capsys.readouterr().err.splitlines()
    runs = [line for line in err if "epoch " in line or f"resgrow {__version__}:" in line]  # not the decoding bar
    assert len(runs) == 6 and all(line.startswith(("a: ", "b: ")) for line in runs), runs  # a header + 2 epochs each
    assert sum(line.startswith("a: epoch") for line in runs) == 2
    said = "resgrow: training 2 runs together on cpu (threads); their training seconds count each other's time"
    assert any(line.startswith(said) for line in err), err


def test_cli_together_a_diverged_run_gets_its_own_line_and_code(capsys, small_zip, tmp_path):
    rc = main(["together", _train(small_zip, tmp_path / "ok", 0), _train(small_zip, tmp_path / "wild", 1, "--lr 1e30")])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("resgrow: error:")]
    assert rc == 3 and len(errors) == 1 and errors[0].startswith(f"resgrow: error: {tmp_path / 'wild'}: training loss became")
    assert "final epoch 2" in captured.out  # the other run finished


@pytest.mark.parametrize("commands,words", [
    (["--arch cifar_resnet8 --data x --out r1"], ["at least two"]),
    (["--arch cifar_resnet8 --data x --out r1", "--arch cifar_resnet8 --data x --out r1"], ["an --out of its own"]),
    (["--out r1 --stop-after 1", "--out r2"], ["--stop-after must be the same"]),
])
def test_cli_together_bad_input_is_one_line(capsys, tmp_path, monkeypatch, commands, words):
    monkeypatch.chdir(tmp_path)
    rc = main(["together", *commands])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("resgrow: error:"), err
    assert all(w in err[0] for w in words), err


def test_cli_together_names_the_run_whose_command_is_bad(capsys, small_zip, tmp_path):
    rc = main(["together", _train(small_zip, tmp_path / "ok", 0), _train(small_zip, tmp_path / "bad", 1, "--arch resnet57")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(tmp_path / "bad") in err[0] and "resnet57" in err[0], err
    assert not (tmp_path / "ok").exists()  # nothing trained: every command is checked first


def test_the_lipschitz_meter_waits_for_a_capture_of_another_run():
    """Its switch of the process-wide autotuning flag must not meet another run's capture (together.LOCK_NOTE)."""
    import threading

    from resgrow.measure.lipschitz import LipschitzMeter

    lock, net, scores = threading.RLock(), model(0), []
    worker = threading.Thread(target=lambda: scores.append(LipschitzMeter(image_size=32, lock=lock).score(net)))
    with lock:  # as a capture holds it
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and scores == []
    worker.join(10)
    assert len(scores) == 1 and scores[0] > 0


def test_evaluation_waits_for_a_capture_of_another_run(mini, tmp_path, monkeypatch):
    """Evaluation meets new shapes (autotuning, workspaces): it holds the lock of runs trained together."""
    import threading

    import resgrow.train.evaluation as evaluation

    lock, held, real = threading.RLock(), [], evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a: held.append(lock._is_owned()) or real(*a))
    Trainer(model(0), mini, cfg(epochs=2), out=tmp_path / "r", lock=lock).fit()
    assert held == [True, True]
