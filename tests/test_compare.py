import json
import sys

import pytest

from resgrow.cli import main
from resgrow.report import compare_table, load_run, protocol_warnings


def _run(path, rows):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(accs, secs, flops, events=None):
    return [{"epoch": e, "test_acc": a, "train_seconds": s, "flops": f, "params": 10 * f, "events": (events or {}).get(e, [])}
            for e, (a, s, f) in enumerate(zip(accs, secs, flops), 1)]


def test_compare_ratios_flops_and_time_to_accuracy(tmp_path):
    base = _run(tmp_path / "base", _rows([0.5, 0.8, 0.9], [10, 20, 30], [4, 4, 4]))
    grown = _run(tmp_path / "grown", _rows([0.6, 0.898, 0.896], [3, 6, 15], [1, 1, 4],
                                           {2: ["grew 1-1-1 -> 2-2-2 (epoch 2)"]}))
    runs = [load_run(base), load_run(grown)]
    assert runs[1].time_to(0.897) == (6, 2)  # the first crossing, not the best epoch
    assert runs[1].time_to(0.95) is None
    assert runs[1].time_to(0.898) == (6, 2)  # reaching the target counts: the baseline reaches its own at gap 0
    assert "| 30.0 (3) |" in compare_table(runs, gap=0).splitlines()[2]
    table = compare_table(runs, gap=0.3)  # target 89.70%
    lines = table.splitlines()
    assert "time to 89.70%" in lines[0]
    assert "| param-epochs vs first |" in lines[0]
    assert lines[2].startswith("| base | 3 | 90.00% | +0.00 | 30.0 | 1.00x | 1.00x | 1.00x | 30.0 (3) |")
    assert lines[3].startswith("| grown | 3 | 89.60% | -0.40 | 15.0 | 0.50x | 0.50x | 0.50x | 6.0 (2) | grew 1-1-1 -> 2-2-2 (epoch 2) @ep2 |")
    grown_rows = [json.loads(x) for x in (tmp_path / "grown" / "metrics.jsonl").read_text().splitlines()]
    grown_rows[2]["params"] = 20  # params 10, 10, 20 against 40 per epoch: parameter-epochs 40 of 120
    (tmp_path / "grown" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grown_rows))
    assert "| 0.50x | 0.33x | 6.0 (2) |" in compare_table([load_run(base), load_run(grown)], gap=0.3).splitlines()[3]


def test_compare_cli_and_bad_input(capsys, tmp_path):
    base = _run(tmp_path / "base", _rows([0.5, 0.9], [10, 20], [4, 4]))
    assert main(["compare", str(base), str(base)]) == 0
    assert "| base | 2 | 90.00% |" in capsys.readouterr().out
    assert main(["compare", str(base), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a run directory" in err[0]
    unfinished = _run(tmp_path / "unfinished", [{"epoch": 1, "train_seconds": 1.0, "flops": 1}])
    assert main(["compare", str(unfinished)]) == 2
    assert "no evaluated final epoch" in capsys.readouterr().err


def test_compare_plot(capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    base = _run(tmp_path / "base", _rows([0.5, 0.9], [10, 20], [4, 4]))
    grown = _run(tmp_path / "grown", _rows([0.6, 0.89], [3, 8], [1, 4], {1: ["grew 1-1-1 -> 2-2-2 (epoch 1)"]}))
    png = tmp_path / "plots" / "acc.png"
    assert main(["compare", str(base), str(grown), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # a run trained together (shared clock) is drawn against epochs only, and says so
    (grown / "run.json").write_text(json.dumps({"shared_device": ["/runs/other"]}))
    import matplotlib.pyplot as plt

    figs = []
    monkeypatch.setattr(plt, "close", figs.append)  # keep the figure to look at
    assert main(["compare", str(base), str(grown), "--plot", str(tmp_path / "shared.png")]) == 0
    seconds, epochs, size = figs[0].axes[:3]
    assert [line.get_label() for line in epochs.get_lines() if not line.get_label().startswith("_")] == \
        ["base", "grown (shared GPU): epochs only"]
    assert len(seconds.get_lines()) == 2 and len(size.get_lines()) == 2  # base alone: its line, the target; its size, its end
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    capsys.readouterr()
    assert main(["compare", str(base), "--plot", str(tmp_path / "x.png")]) == 0  # the table, then a line on the plot
    said = capsys.readouterr()
    assert said.out.startswith("| run |") and "| base | 2 | 90.00% |" in said.out
    assert said.err == "resgrow: no plot: --plot needs matplotlib: pip install 'resgrow[plot]'\n"


def test_the_plot_names_the_run_keeps_every_size_line_visible_and_counts_whole_epochs(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    base = _run(tmp_path / "base", _rows([0.5, 0.9], [10, 20], [4, 4]))
    grown = _run(tmp_path / "grown", _rows([0.6, 0.89], [3, 8], [1, 4], {1: ["grew 1-1-1 -> 2-2-2 (epoch 1)"]}))
    (base / "run.json").write_text(json.dumps({"arch": "resnet74", "data": "/data/cifar10-jpeg.zip"}))
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    assert main(["compare", str(base), str(grown), "--plot", str(tmp_path / "p.png")]) == 0
    fig = figs[0]
    assert fig._suptitle.get_text().startswith("resnet74 on cifar10-jpeg.zip\n")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["base", "grown"]  # one legend for every panel
    epochs = fig.axes[1]
    epochs.set_xlim(0.5, 2.5)
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in epochs.get_xticks())
    size = [line for line in fig.axes[2].get_lines() if len(line.get_xdata()) > 1]
    # the grown run ends at the baseline's size: it is drawn above it, thinner and dashed, so both show
    assert size[1].get_zorder() > size[0].get_zorder() and size[1].get_linewidth() < size[0].get_linewidth()
    assert size[1].get_linestyle() != "-"


def test_seed_groups_average_over_seeds(capsys, tmp_path):
    b0 = _run(tmp_path / "base_s0", _rows([0.5, 0.90], [10, 20], [4, 4]))
    b1 = _run(tmp_path / "base_s1", _rows([0.5, 0.92], [10, 24], [4, 4]))
    g0 = _run(tmp_path / "grow_s0", _rows([0.5, 0.89], [5, 10], [1, 4], {1: ["grew 1-1-1 -> 2-2-2 (epoch 1)"]}))
    g1 = _run(tmp_path / "grow_s1", _rows([0.5, 0.91], [5, 12], [1, 4]))
    assert main(["compare", "--seeds", *map(str, (b0, b1, g0, g1))]) == 0
    lines = capsys.readouterr().out.strip().split("\n\n")[1].splitlines()
    assert lines[2] == "| base | 2 | 91.00% (90.00%, 92.00%) | +0.00 | 22.0 | 1.00x | 1.00x | 1.00x | -; - |"
    assert lines[3] == "| grow | 2 | 90.00% (89.00%, 91.00%) | -1.00 | 11.0 | 0.50x | 0.62x | 0.62x | 1; - |"


def test_size_steps_follow_the_model_trained_in_each_epoch(tmp_path):
    from resgrow.report.compare import size_steps

    grown = _run(tmp_path / "grown", _rows([0.5, 0.6, 0.7], [2, 4, 10], [1e9, 1e9, 4e9],
                                           {2: ["grew 1-1-1 -> 4-4-4 (epoch 2)"]}))
    secs, gflops = size_steps(load_run(grown))
    # epochs 1-2 (0 s to 4 s) trained the 1-GFLOP net, epoch 3 (4 s to 10 s) the grown one
    assert secs == [0.0, 2, 4, 10] and gflops == [1.0, 1.0, 4.0, 4.0]


def _info(gpu="NVIDIA H100 80GB HBM3", epochs=2, lr=0.1, blocks=(12, 12, 12)):
    return {"device": "cuda", "gpu": gpu, "torch": "2.11.0", "dataset": "cifar10-jpeg: 50000 train",
            "spec": {"block": "basic", "blocks": list(blocks), "widths": [16, 32, 64]},
            "config": {"epochs": epochs, "batch_size": 128, "lr": lr, "weight_decay": 5e-4, "augment": True,
                       "label_smoothing": 0.0, "schedule": "cosine", "seed": 0},
            "fast_path": {"amp_bf16": True, "channels_last": True, "cuda_graphs": True, "bf16_weights": False, "compile": "none"}}


def test_compare_warns_when_runs_are_not_comparable(capsys, tmp_path):
    rows = _rows([0.5, 0.9], [10, 20], [4, 4])
    dirs = {}
    for name, info in [("base", _info()), ("same", dict(_info(), config=dict(_info()["config"], schedule="cosine_restarts", seed=1))),
                       ("other_gpu", _info(gpu="NVIDIA H200")), ("short", _info(epochs=1, lr=0.5)), ("bare", None)]:
        dirs[name] = _run(tmp_path / name, rows)
        if info is not None:
            (dirs[name] / "run.json").write_text(json.dumps(info))
    # a different schedule or seed is what a comparison is for: no warning, and the table says which schedule
    assert protocol_warnings([load_run(dirs["base"]), load_run(dirs["same"])]) == []
    table = compare_table([load_run(dirs["base"]), load_run(dirs["same"])]).splitlines()
    assert table[0].endswith("| lr schedule |") and table[2].endswith("| cosine |") and table[3].endswith("| cosine_restarts |")
    reset = dict(_info(), config=dict(_info()["config"], schedule="cosine_reset", restarts=[27.0, 83.0]))
    grown = _run(tmp_path / "grown", _rows([0.5, 0.9], [5, 10], [1, 4], {1: ["grew 1-1-1 -> 2-2-2 (epoch 1)"]}))
    for d, info in ((dirs["bare"], reset), (grown, _info())):
        (d / "run.json").write_text(json.dumps(info))
    assert load_run(dirs["bare"]).lr_schedule == "cosine_reset 27,83"
    assert load_run(grown).lr_schedule == "cosine + restart at each growth"
    kept = _run(tmp_path / "kept", _rows([0.5, 0.9], [5, 10], [1, 4], {
        1: [{"kind": "start", "text": "start 1-1-1", "lr_restarts": False}], 2: ["grew 1-1-1 -> 2-2-2 (epoch 2)"]}))
    (kept / "run.json").write_text(json.dumps(_info()))
    assert load_run(kept).lr_schedule == "cosine"  # --no-lr-restarts: the growths left the lr alone
    (dirs["bare"] / "run.json").unlink()
    w = protocol_warnings([load_run(dirs[n]) for n in ("base", "other_gpu", "short", "bare")])
    assert w[0] == "bare has no run.json: its setup is not checked"
    assert any(x.startswith("not the same device: base NVIDIA H100 80GB HBM3; other_gpu NVIDIA H200; short NVIDIA H100")
               and "compare machines" in x for x in w)
    assert "not the same epochs: base 2; other_gpu 2; short 1" in w
    assert "not the same peak lr: base 0.1; other_gpu 0.1; short 0.5" in w
    assert len(w) == 4
    assert main(["compare", str(dirs["base"]), str(dirs["other_gpu"])]) == 0
    out = capsys.readouterr().out
    assert "> warning: not the same device" in out
    # a run still training (or stopped) is compared, but never passed off as final
    (dirs["same"] / "run.json").write_text(json.dumps(_info(epochs=160)))
    w = protocol_warnings([load_run(dirs["base"]), load_run(dirs["same"])])
    assert "same is unfinished: it has trained 2 of its 160 epochs, so its numbers are not final" in w


def _timed(path, epoch_secs, blocks):
    """A run whose epoch e trained `blocks[e]` in `epoch_secs[e]` seconds."""
    rows, t = [], 0.0
    for e, (sec, b) in enumerate(zip(epoch_secs, blocks), 1):
        t += sec
        rows.append({"epoch": e, "test_acc": 0.5, "train_seconds": t, "epoch_seconds": sec, "flops": 1,
                     "blocks": b, "widths": "16-32-64"})
    return load_run(_run(path, rows))


def test_steady_epoch_at_the_final_size_and_the_speed_warning(tmp_path):
    from resgrow.report.compare import speed_warnings

    base = _timed(tmp_path / "base", [5.0, 2.0, 2.1, 2.0, 2.0], ["4-4-4"] * 5)
    # the grown run's steady epochs are those after the growth's first (capturing) epoch at 4-4-4
    grown = _timed(tmp_path / "grown", [2.0, 0.5, 0.5, 2.4, 2.01, 2.0, 2.02], ["1-1-1"] * 3 + ["4-4-4"] * 4)
    assert base.steady_epochs == [2.0, 2.1, 2.0, 2.0] and base.steady_epoch == 2.0
    assert grown.steady_epochs == [2.01, 2.0, 2.02] and grown.steady_epoch == 2.01
    assert compare_table([base, grown]).splitlines()[3].endswith("| - | 2.010 | - |")  # no run.json: no schedule
    assert speed_warnings([base, grown]) == []  # 0.5% apart: one machine's noise
    slow = _timed(tmp_path / "slow", [5.0, 2.1, 2.1, 2.1], ["4-4-4"] * 4)
    w = speed_warnings([base, grown, slow])
    assert len(w) == 1 and "(4-4-4 x 16-32-64)" in w[0] and "5.0% apart" in w[0] and "slow 2.100 s" in w[0]
    assert w == [x for x in protocol_warnings([base, grown, slow]) if "speeds" in x]
    # a method's last phase (an event at the end of epoch 3) trains the same net faster: its epochs are the steady
    phases = _timed(tmp_path / "phases", [5.0, 3.0, 3.0, 2.5, 2.0, 2.0, 2.0], ["4-4-4"] * 7)
    rows = phases.log
    rows[2]["events"] = [{"kind": "phase", "text": "training on labels"}]
    phases = load_run(_run(tmp_path / "phases2", rows))
    assert phases.steady_epochs == [2.0, 2.0, 2.0]
    other = _timed(tmp_path / "other", [5.0, 3.0, 3.0, 3.0], ["2-2-2"] * 4)  # another net: not compared
    short = _timed(tmp_path / "short", [5.0, 3.0, 3.0], ["4-4-4"] * 3)  # two steady epochs: too few to judge
    said = speed_warnings([base, other, short])  # no speed compared; the one that could not be checked is named
    assert len(said) == 1 and said[0].startswith("the speed of short cannot be checked"), said


def test_a_time_ratio_whose_speed_cannot_be_checked_is_warned_about(tmp_path):
    """Four epochs: too few steady ones at the final size to check that two runs trained on machines of one speed."""
    rows = lambda secs: [{"epoch": e, "test_acc": 0.5, "train_seconds": float(sum(secs[:e])), "epoch_seconds": s,  # noqa: E731
                         "flops": 4, "blocks": "2-2-2", "widths": "16-32-64"} for e, s in enumerate(secs, 1)]
    short = [load_run(_run(tmp_path / n, rows([2.0, 1.0, 1.0]))) for n in ("base", "method")]
    assert any("the speed of base, method cannot be checked (fewer than 3 steady epochs" in w
               for w in protocol_warnings(short))
    long = [load_run(_run(tmp_path / n, rows([2.0, 1.0, 1.0, 1.0, 1.0]))) for n in ("base5", "method5")]
    assert not any("cannot be checked" in w for w in protocol_warnings(long))


def test_a_shared_clock_is_left_out_of_the_speed_check(tmp_path):
    from resgrow.report.compare import speed_warnings

    base = _timed(tmp_path / "base", [5.0, 2.0, 2.0, 2.0], ["4-4-4"] * 4)
    shared = _timed(tmp_path / "shared", [5.0, 3.0, 3.0, 3.0], ["4-4-4"] * 4)  # 50% slower: another run held the GPU
    assert len(speed_warnings([base, shared])) == 1  # alone, this would be another machine
    shared.info = {"shared_device": ["/runs/other"]}
    assert speed_warnings([base, shared]) == []
    table = compare_table([base, shared]).splitlines()
    steady = table[0].split(" | ").index("steady epoch at final size (s)")
    assert table[3].split(" | ")[steady] == "3.000 (shared GPU)"


def test_growths_are_read_from_the_events_kind_and_from_older_logs_text(tmp_path):
    grow = {"kind": "grow", "text": "doubled the depth", "from": "1-1-1", "to": "2-2-2", "why": "epoch 1"}
    new = load_run(_run(tmp_path / "new", _rows([0.5, 0.6], [1, 2], [1, 2], {1: [{"kind": "start", "text": "grew is a word"},
                                                                             grow]})))
    old = load_run(_run(tmp_path / "old", _rows([0.5, 0.6], [1, 2], [1, 2], {1: ["grew 1-1-1 -> 2-2-2 (epoch 1)"]})))
    assert new.growths == ["doubled the depth @ep1"] and [r["epoch"] for r in new.grow_rows] == [1]
    assert old.growths == ["grew 1-1-1 -> 2-2-2 (epoch 1) @ep1"] and [r["epoch"] for r in old.grow_rows] == [1]


def test_a_method_adds_its_own_columns_through_run_json(tmp_path):
    base = _run(tmp_path / "base", _rows([0.5, 0.9], [10, 20], [4, 4]))
    lip = _run(tmp_path / "lip", [dict(r, lip_seconds=s) for r, s in zip(_rows([0.5, 0.9], [5, 10], [1, 4]), (0.25, 0.75))])
    (lip / "run.json").write_text(json.dumps({"report_columns": [{"title": "Lipschitz s/epoch", "field": "lip_seconds"}]}))
    alone = compare_table([load_run(base)])
    assert "Lipschitz" not in alone
    head, _, b, m = compare_table([load_run(base), load_run(lip)]).splitlines()
    col = head.split(" | ").index("Lipschitz s/epoch")
    assert b.split(" | ")[col] == "-" and m.split(" | ")[col] == "0.500"  # the mean over the epochs


def test_the_plot_adds_each_growths_lr_scale_when_a_run_adapts_them(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    base = _run(tmp_path / "base", _rows([0.5, 0.9], [10, 20], [4, 4]))
    scales = [[1.0], [1.0, 1.05], [1.0, 1.04, 1.4]]
    widen = _run(tmp_path / "widen", [dict(r, lr_scales=s) for r, s in zip(_rows([0.4, 0.7, 0.88], [2, 5, 9], [1, 2, 4]), scales)])
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    assert main(["compare", str(base), "--plot", str(tmp_path / "a.png")]) == 0
    assert len(figs[-1].axes) == 3  # no run adapts its lr: no fourth panel
    assert main(["compare", str(base), str(widen), "--plot", str(tmp_path / "b.png")]) == 0
    panel = figs[-1].axes[3]
    assert [list(line.get_ydata()) for line in panel.get_lines()] == [[1.0, 1.0, 1.0], [1.05, 1.04], [1.4]]
    assert [list(line.get_xdata()) for line in panel.get_lines()] == [[1, 2, 3], [2, 3], [3]]


def test_training_flops_count_the_work_a_run_logs_in_gradients_of_its_requested_net(tmp_path):
    base = _run(tmp_path / "base", [dict(r, steps=10, grad_equivalents=10) for r in _rows([0.5, 0.9], [10, 20], [4, 4])])
    # five fine-gradient equivalents a step (V-cycles), on the same net
    mg = _run(tmp_path / "mg", [dict(r, steps=10, grad_equivalents=50) for r in _rows([0.5, 0.9], [50, 100], [4, 4])])
    for d in (base, mg):
        (d / "run.json").write_text(json.dumps({"reference_flops": 4}))
    old = _run(tmp_path / "old", _rows([0.5, 0.9], [10, 20], [4, 4]))  # logs before the work was logged: its model's
    runs = [load_run(base), load_run(mg), load_run(old)]
    assert [r.flops for r in runs] == [8, 40, 8]
    assert "| 5.00x |" in compare_table(runs).splitlines()[3]


def test_every_run_logs_its_work_in_gradients_of_the_requested_net(small):
    import torch

    from conftest import cfg
    from resgrow.methods import build_method
    from resgrow.models import ArchSpec, ResNet
    from resgrow.train import Trainer

    torch.manual_seed(0)
    spec = ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8)
    trainer = Trainer(ResNet(spec), small, cfg(epochs=2, batch_size=100), build_method("multilevel", start_blocks="1-1-1"))
    first, last = trainer.fit()
    assert last["grad_equivalents"] == pytest.approx(last["steps"]) and first["blocks"] == "1-1-1"
    assert first["grad_equivalents"] == pytest.approx(first["steps"] * first["flops"] / last["flops"], abs=1e-3)
    assert first["grad_equivalents"] < 0.8 * first["steps"]


def test_stages_say_where_a_runs_time_went_size_by_size(capsys, tmp_path):
    rows = _rows([0.3, 0.5, 0.7, 0.8], [10, 20, 50, 80], [1, 1, 4, 4], {2: ["grew 1-1-1 -> 2-2-2 (epoch 2)"]})
    for r, blocks in zip(rows, ["1-1-1", "1-1-1", "2-2-2", "2-2-2"]):
        r.update(blocks=blocks, widths="8-16-32")  # the size trained in the epoch (the growth at its end)
    run = _run(tmp_path / "grown", rows)
    assert [(s["size"], s["epochs"], s["seconds"]) for s in load_run(run).stages] == [
        ("1-1-1 x 8-16-32", 2, 20.0), ("2-2-2 x 8-16-32", 2, 60.0)]
    assert main(["compare", str(run), "--stages"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "| grown | 1-1-1 x 8-16-32 | 2 | 20.0 | 25% | 10.0 | 0.25x |" in out
    assert "| grown | 2-2-2 x 8-16-32 | 2 | 60.0 | 75% | 30.0 | 1.00x |" in out


def _clocked(path, epoch_secs, blocks, cpu, work=1.0, method="baseline", epochs=None):
    """A run on CPU `cpu` whose epoch e trained `blocks[e]` in `epoch_secs[e]` seconds, `work` gradients a step."""
    rows, t = [], 0.0
    for e, (sec, b) in enumerate(zip(epoch_secs, blocks), 1):
        t += sec
        rows.append({"epoch": e, "test_acc": 0.5 + 0.01 * e, "train_seconds": t, "epoch_seconds": sec, "flops": 1,
                     "blocks": b, "widths": "16-32-64", "steps": 10, "grad_equivalents": 10 * work,
                     "events": [{"kind": "grow", "text": "grew"}] if e < len(blocks) and blocks[e] != b else []})
    run = _run(path, rows)
    info = dict(_info(epochs=epochs or len(rows)), device="cpu", gpu=None, cpu=cpu, method=method)
    (run / "run.json").write_text(json.dumps(info))
    return load_run(run)


def test_the_epoch_clock_times_each_run_in_epochs_of_the_final_net_on_its_own_machine(capsys, tmp_path):
    from resgrow.report.compare import EPOCH_CLOCK, on_epoch_clock

    fast = _clocked(tmp_path / "base_s0", [5.0, 2.0, 2.0, 2.0, 2.0], ["4-4-4"] * 5, "Fast CPU")
    # on a machine half as fast: two epochs of the small net, the first at the final size (warm-up), then steady ones
    grown = _clocked(tmp_path / "grown_s0", [1.0, 1.0, 9.0, 4.0, 4.0, 4.0], ["1-1-1"] * 2 + ["4-4-4"] * 4, "Slow CPU",
                     method="multilevel")
    # a method whose steps at the final size are its own (two gradients each): timed by the plain run on its machine
    own = _clocked(tmp_path / "own_s0", [12.0, 8.0, 8.0, 8.0], ["4-4-4"] * 4, "Slow CPU", work=2.0, method="mgopt")
    assert fast.plain_epoch == 2.0 and grown.plain_epoch == 4.0 and own.plain_epoch is None
    timed = on_epoch_clock([fast, grown, own])
    assert [r.train_seconds for r in timed] == [6.5, 23 / 4, 9.0] and timed[0].clock == EPOCH_CLOCK
    assert [x["train_seconds"] for x in timed[1].log] == [0.25, 0.5, 2.75, 3.75, 4.75, 5.75]
    assert load_run(tmp_path / "grown_s0").train_seconds == 23.0  # the run on disk is untouched

    assert main(["compare", str(tmp_path / "base_s0"), str(tmp_path / "grown_s0"),
                 "--clock", "epochs"]) == 0
    out = capsys.readouterr().out
    assert f"| training {EPOCH_CLOCK} | time vs first |" in out and "| 5.8 | 0.88x |" in out
    assert "not the same device" not in out and "different speeds" not in out  # each run on its own machine
    assert main(["compare", str(tmp_path / "base_s0"), str(tmp_path / "grown_s0")]) == 0
    out = capsys.readouterr().out
    assert "not the same device: base_s0 Fast CPU; grown_s0 Slow CPU" in out and "| 23.0 | 1.77x |" in out

    _clocked(tmp_path / "alone_s0", [12.0, 8.0, 8.0, 8.0], ["4-4-4"] * 4, "Third CPU", work=2.0)
    rc = main(["compare", str(tmp_path / "base_s0"), str(tmp_path / "alone_s0"), "--clock", "epochs"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "alone_s0 has no plain epochs" in err and "Third CPU" in err


def test_the_epoch_clock_times_each_part_of_a_run_resumed_elsewhere_at_its_own_machines_rate(capsys, tmp_path):
    from resgrow.report.compare import on_epoch_clock

    _clocked(tmp_path / "fast_s0", [5.0, 2.0, 2.0, 2.0, 2.0], ["4-4-4"] * 5, "Fast CPU")
    _clocked(tmp_path / "slow_s0", [9.0, 4.0, 4.0, 4.0, 4.0], ["4-4-4"] * 5, "Slow CPU")
    # epochs 1-3 on the slow machine (the small net, then the first epoch of the final one), 4-7 on the fast one
    _clocked(tmp_path / "moved_s0", [1.0, 1.0, 9.0, 3.0, 2.0, 2.0, 2.0], ["1-1-1"] * 2 + ["4-4-4"] * 5, "Fast CPU",
             method="multilevel")
    info = json.loads((tmp_path / "moved_s0" / "run.json").read_text())
    info["machines"] = [{"cpu": "Slow CPU", "gpu": None, "from_epoch": 0}, {"cpu": "Fast CPU", "gpu": None, "from_epoch": 3}]
    (tmp_path / "moved_s0" / "run.json").write_text(json.dumps(info))
    fast, slow, moved = (load_run(tmp_path / n) for n in ("fast_s0", "slow_s0", "moved_s0"))
    assert [moved.machine_at(e) for e in (1, 3, 4, 7)] == ["Slow CPU", "Slow CPU", "Fast CPU", "Fast CPU"]
    assert moved.plain_epoch_by_machine == {"Fast CPU": 2.0}  # the slow machine trained too few plain epochs
    timed = on_epoch_clock([fast, slow, moved])[2]
    # 11 s on the slow machine at its 4 s an epoch (the slow baseline's), 9 s on the fast one at 2 s
    assert [x["train_seconds"] for x in timed.log] == [0.25, 0.5, 2.75, 4.25, 5.25, 6.25, 7.25]
    assert timed.train_seconds == 7.25 and timed.log[2]["epoch_seconds"] == 2.25 and timed.log[3]["epoch_seconds"] == 1.5

    dirs = [str(tmp_path / n) for n in ("fast_s0", "moved_s0")]
    rc = main(["compare", *dirs, "--clock", "epochs"])
    err = capsys.readouterr().err.strip()  # without a run that times the slow machine, its part has no unit
    assert rc != 0 and len(err.splitlines()) == 1 and "moved_s0 has no plain epochs" in err and "(Slow CPU)" in err
    assert main(["compare", *dirs, str(tmp_path / "slow_s0"), "--clock", "epochs"]) == 0
    out = capsys.readouterr().out
    assert "| 7.2 | 1.12x |" in out and "mixes their speeds" not in out  # 7.25 against the fast baseline's 6.5
    assert main(["compare", *dirs]) == 0
    assert "moved_s0 trained on 2 machines" in capsys.readouterr().out  # in seconds it does mix them


def test_the_frontier_on_the_epoch_clock_holds_runs_from_other_machines(capsys, tmp_path):
    for e, cpu in ((4, "Fast CPU"), (8, "Fast CPU")):
        _clocked(tmp_path / f"base_{e}ep_s0", [3.0] + [2.0] * (e - 1), ["4-4-4"] * e, cpu)
    _clocked(tmp_path / "grown_s0", [1.0, 1.0, 9.0, 4.0, 4.0, 4.0], ["1-1-1"] * 2 + ["4-4-4"] * 4, "Slow CPU",
             method="multilevel")
    dirs = [str(tmp_path / n) for n in ("base_4ep_s0", "base_8ep_s0", "grown_s0")]
    assert main(["compare", "--frontier", *dirs, "--clock", "epochs"]) == 0
    out = capsys.readouterr().out
    # 4 epochs take 4.5 plain epochs, 8 take 8.5; the grown run 5.75 (23 s of a machine at 4 s an epoch)
    assert "| 4 epochs | 1 | 54.00% (54.00%, 54.00%) | 4.50 |" in out and "| grown | 1 | 56.00% | 5.75 |" in out
    assert "linear in final-net epochs" in out
    assert main(["compare", "--frontier", *dirs]) == 0  # in seconds the slow machine's run looks slower than it is
    assert "| grown | 1 | 56.00% | 23.0 |" in capsys.readouterr().out
