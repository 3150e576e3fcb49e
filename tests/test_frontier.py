"""`resgrow compare --frontier`: the fixed-size baseline's accuracy-time frontier from runs at several budgets,
and every other run held against it (interpolation, seeds, a run above and one below)."""

import json

import pytest

from resgrow.cli import main
from resgrow.report import load_run
from resgrow.report.frontier import acc_at, frontier_table, split_runs, time_for

SPEC = {"block": "basic", "blocks": [12, 12, 12], "widths": [16, 32, 64]}


def _run(root, name, epochs, acc, seconds, method="baseline", restarts=(), flops=1):
    d = root / name
    d.mkdir()
    rows = [{"epoch": e, "train_seconds": seconds * e / epochs, "test_acc": acc * e / epochs, "flops": flops}
            for e in range(1, epochs + 1)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "run.json").write_text(json.dumps({"method": method, "spec": SPEC,
                                            "config": {"epochs": epochs, "restarts": list(restarts)}}))
    return d


@pytest.fixture
def runs(tmp_path):
    dirs = [_run(tmp_path, "base40_s0", 40, 0.88, 100), _run(tmp_path, "base40_s1", 40, 0.90, 110),
            _run(tmp_path, "base80_s0", 80, 0.92, 200), _run(tmp_path, "base160_s0", 160, 0.93, 400),
            _run(tmp_path, "grown_s0", 160, 0.925, 250, method="multilevel(...)"),
            _run(tmp_path, "grown_s1", 160, 0.915, 230, method="multilevel(...)"),
            _run(tmp_path, "slow_s0", 160, 0.91, 300, method="lipgrow(...)"),
            _run(tmp_path, "restarts_s0", 160, 0.95, 420, restarts=(60, 110))]
    return [load_run(d) for d in dirs]


def test_the_frontier_averages_seeds_per_budget_in_order_of_time(runs):
    frontier, points = split_runs(runs)
    assert [(f.epochs, len(f.runs)) for f in frontier] == [(40, 2), (80, 1), (160, 1)]
    assert frontier[0].seconds == pytest.approx(105) and frontier[0].acc == pytest.approx(0.89)
    assert frontier[0].spread == pytest.approx((0.88, 0.90))
    assert [p.name for p in points] == ["grown", "slow", "restarts"]  # a baseline with restarts is a point too
    assert points[0].seconds == pytest.approx(240) and points[0].acc == pytest.approx(0.92)


def test_interpolation_is_linear_in_seconds_between_budgets_and_never_beyond_them(runs):
    frontier, _ = split_runs(runs)
    assert acc_at(frontier, 300) == pytest.approx(0.925)  # halfway from 200 s (92%) to 400 s (93%)
    assert acc_at(frontier, 105) == pytest.approx(0.89)
    assert acc_at(frontier, 50) is None and acc_at(frontier, 500) is None
    assert time_for(frontier, 0.905) == pytest.approx(105 + 95 * 0.5)  # halfway from 89% to 92%
    assert time_for(frontier, 0.94) is None and time_for(frontier, 0.85) is None


def test_a_run_above_and_a_run_below_the_frontier_are_named_so(runs):
    table = frontier_table(runs)
    grown = next(line for line in table.splitlines() if line.startswith("| grown |"))
    slow = next(line for line in table.splitlines() if line.startswith("| slow |"))
    restarts = next(line for line in table.splitlines() if line.startswith("| restarts |"))
    # grown: 92.00% at 240 s, where the baseline has 92.2%; the baseline needs 200 s for 92%
    assert "| 92.20% | -0.20 | 200.0 | 1.20x | below the frontier" in grown
    # slow: 91% at 300 s against 92.5%
    assert "| 92.50% | -1.50 |" in slow and "below the frontier" in slow
    assert "outside the measured budgets" in restarts
    assert "| 40 epochs | 2 | 89.00% (88.00%, 90.00%) | 105.0 |" in table


def test_a_fast_accurate_run_is_above_the_frontier(tmp_path):
    dirs = [_run(tmp_path, "b40_s0", 40, 0.88, 100), _run(tmp_path, "b80_s0", 80, 0.92, 200),
            _run(tmp_path, "m_s0", 80, 0.91, 120, method="multilevel(...)"),
            _run(tmp_path, "fast_s0", 80, 0.90, 60, method="multilevel(...)")]
    table = frontier_table([load_run(d) for d in dirs])
    m = next(line for line in table.splitlines() if line.startswith("| m |"))
    assert "| 88.80% | +2.20 | 175.0 | 0.69x | above the frontier" in m  # 88% + 4 * 20/100 points at 120 s
    assert "faster and more accurate than the shortest budget" in table


def test_the_command_line_prints_the_frontier_and_refuses_runs_without_one(capsys, tmp_path, runs):
    assert main(["compare", "--frontier", *(str(tmp_path / r.name) for r in runs)]) == 0
    out = capsys.readouterr().out
    assert "baseline acc at this time" in out and "not the same epochs" not in out
    rc = main(["compare", "--frontier", str(tmp_path / "grown_s0")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "plain baseline runs" in err[0]


def test_the_frontier_plot_is_drawn(tmp_path, runs):
    pytest.importorskip("matplotlib")
    from resgrow.report.frontier import plot_frontier

    plot_frontier(runs, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10_000


def test_runs_of_one_name_at_other_epochs_are_separate_points(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    dirs = [_run(tmp_path / "a", "base_s0", 40, 0.88, 100), _run(tmp_path / "a", "base_s1", 160, 0.92, 400),
            _run(tmp_path / "a", "m_s0", 160, 0.91, 200, method="m"), _run(tmp_path / "b", "m_s0", 40, 0.87, 60, method="m")]
    _, points = split_runs([load_run(d) for d in dirs])
    assert [(p.name, len(p.runs)) for p in points] == [("m (40 epochs)", 1), ("m (160 epochs)", 1)]


def test_runs_are_held_against_the_frontier_in_work_too_and_timed_to_the_longest_budgets_accuracy(tmp_path):
    """MG/OPT spends more than a gradient a step, width growth less: the frontier in FLOPs says what the work
    bought; the time to the longest budget's accuracy minus 0.3 points says when a run was as good."""
    dirs = [_run(tmp_path, "b40_s0", 40, 0.88, 100), _run(tmp_path, "b80_s0", 80, 0.92, 200),
            _run(tmp_path, "m_s0", 80, 0.905, 120, method="widen(...)", flops=0.75),
            _run(tmp_path, "fast_s0", 80, 0.95, 100, method="multilevel(...)")]
    lines = frontier_table([load_run(d) for d in dirs]).splitlines()
    assert "In work (training FLOPs, 1.00 = the fixed-size net's 80 epochs):" in lines
    # m: 60 epochs' work, where the frontier has 90%; it needs 65 for m's 90.5%
    assert "| m | 0.75 | 90.00% | +0.50 | 0.81 | 0.92x |" in lines
    assert any(line.startswith("Time to 91.70% (the 80-epoch baseline's final accuracy minus 0.3 points") for line in lines)
    assert "| baseline 80 epochs | 1 | 200.0 | 1.00x |" in lines  # it reaches 91.7% in its last epoch
    assert "| baseline 40 epochs | 1 | not reached by 1 of 1 | - |" in lines
    assert "| m | 1 | not reached by 1 of 1 | - |" in lines
    assert "| fast | 1 | 97.5 | 0.49x |" in lines  # epoch 78 of 80: 95% x 78/80 >= 91.7%
