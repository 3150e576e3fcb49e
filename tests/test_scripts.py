"""The recipes in scripts/ that reproduce BENCHMARKS.md's tables, on CPU with tiny nets, a few epochs and a
small zip: a user with a GPU runs the same commands at full size."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
bash = pytest.mark.skipif(shutil.which("bash") is None or os.name != "posix", reason="the recipes are bash scripts")


def _env(tmp_path: Path, **kw) -> dict:
    """This interpreter's `resgrow` and `python3` first on PATH, a cache of the test's own."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    return dict(os.environ, PATH=path, PYTHONPATH=str(ROOT / "src"), RESGROW_CACHE=str(tmp_path / "cache"), **kw)


def _script(name: str, *args, env: dict, stream: str = "stdout") -> str:
    """Run scripts/NAME, which must succeed; its stdout (or `stream`)."""
    done = subprocess.run(["bash", f"scripts/{name}", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return getattr(done, stream)


def _logs(out: Path) -> dict:
    return {d.name: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in sorted(out.iterdir()) if (d / "metrics.jsonl").is_file()}


@bash
def test_reproduce_depth_resumes_stopped_rows_trains_each_once_and_tables_them(small_zip, tmp_path):
    out = tmp_path / "depth"
    env = _env(tmp_path, DATA=str(small_zip), ARCH="cifar_resnet14", START="1-1-1", LIP_WINDOW="1")
    rows = ["baseline_r14_s0", "baseline_restarts_lip_r14_s0", "baseline_restarts_r14_s0", "lipgrow_r14_s0",
            "multilevel_r14_s0"]

    said = _script("reproduce_depth.sh", out, 4, 0, env=dict(env, STOP_AFTER="2"))  # cut short, as a job's limit would
    assert said.count(": training\n") == 4 and "baseline_restarts_lip_r14_s0: waits for a finished lipgrow" in said
    assert sorted(_logs(out)) == sorted(set(rows) - {"baseline_restarts_lip_r14_s0"})
    assert all([r["epoch"] for r in log] == [1, 2] for log in _logs(out).values())

    said = _script("reproduce_depth.sh", out, 4, 0, env=env)  # the same command goes on
    assert said.count(": training (resumed)\n") == 4 and said.count(": training\n") == 1
    logs = _logs(out)
    assert sorted(logs) == rows and all([r["epoch"] for r in log] == [1, 2, 3, 4] for log in logs.values())
    config = {name: json.loads((out / name / "run.json").read_text())["config"] for name in rows}
    grew = [r["epoch"] for r in logs["lipgrow_r14_s0"] if any(e["kind"] == "grow" for e in r.get("events", []))]
    assert (config["baseline_restarts_lip_r14_s0"]["schedule"], config["baseline_restarts_lip_r14_s0"]["restarts"]) == (
        "cosine_reset", [float(e) for e in grew]) and grew  # LipGrow's restart baseline restarts where it grew
    assert config["baseline_restarts_r14_s0"]["restarts"] == [2.0, 3.0]  # 37.5% and 68.75% of the run
    table = (out / "summary.md").read_text()
    assert table.splitlines()[2].startswith("| baseline_r14_s0 | 4 |") and all(f"| {r} | 4 |" in table for r in rows)
    assert (out / "accuracy_vs_time.png").stat().st_size > 0

    said = _script("reproduce_depth.sh", out, 4, 0, env=env)  # nothing left: nothing is trained twice
    assert said.count("finished already") == 5 and _logs(out) == logs


@bash
def test_reproduce_width_trains_the_baseline_and_both_widenings_and_tables_them(small_zip, tmp_path):
    out = tmp_path / "width"
    env = _env(tmp_path, DATA=str(small_zip), GROWTH="--growths 2 --widen-every 1 --start-width 0.5",
               ROWS="baseline widen net2wider")
    said = _script("reproduce_width.sh", out, "cifar_resnet8", 3, 0, env=env)
    logs = _logs(out)
    assert sorted(logs) == ["baseline_cifar_resnet8_s0", "net2wider_cifar_resnet8_s0", "widen_cifar_resnet8_s0"]
    assert [r["widths"] for r in logs["widen_cifar_resnet8_s0"]] == ["8-16-32", "12-22-46", "16-32-64"]
    assert "lr_scales" in logs["widen_cifar_resnet8_s0"][-1] and "lr_scales" not in logs["net2wider_cifar_resnet8_s0"][-1]
    method = json.loads((out / "net2wider_cifar_resnet8_s0" / "run.json").read_text())["method"]
    assert "init net2wider, lr adaptation off" in method
    table = (out / "summary.md").read_text()
    assert table.splitlines()[2].startswith("| baseline_cifar_resnet8_s0 | 3 |") and all(f"| {n} | 3 |" in table for n in logs)
    assert said.count(": training\n") == 3
    assert _script("reproduce_width.sh", out, "cifar_resnet8", 3, 0, env=env).count("finished already") == 3


@bash
def test_reproduce_mgopt_trains_sgd_and_mgopt_and_tables_their_work(small_zip, tmp_path):
    out = tmp_path / "mgopt"
    env = _env(tmp_path, DATA=str(small_zip), ROWS="baseline mgopt2", EXTRA="--batch-size 50")
    _script("reproduce_mgopt.sh", out, "cifar_resnet26", 1, 0, env=env)
    logs = _logs(out)
    assert sorted(logs) == ["baseline_cifar_resnet26_s0", "mgopt2_cifar_resnet26_s0"]
    assert logs["mgopt2_cifar_resnet26_s0"][-1]["grad_equivalents"] > 8  # 8 steps, each more than one gradient
    table = (out / "summary.md").read_text()
    assert "fine-gradient equivalents" in table and table.splitlines()[2].startswith("| baseline_cifar_resnet26_s0 | 1 |")


@bash
def test_reproduce_wide2narrow_trains_the_method_and_the_thin_net_for_its_time(small_zip, tmp_path):
    out = tmp_path / "w2n"
    env = _env(tmp_path, DATA=str(small_zip), EXTRA="--batch-size 100",
               W2N="--teacher-epochs 1 --imitate-epochs 1 --distill-epochs 1")
    _script("reproduce_wide2narrow.sh", out, "cifar_resnet8", 6, 0, env=env)
    logs = _logs(out)
    base, method = logs["baseline_cifar_resnet8_s0"], logs["wide2narrow_cifar_resnet8_s0"]
    equal = logs["baseline_equal_time_cifar_resnet8_s0"]
    assert len(equal) == max(1, round(6 * method[-1]["train_seconds"] / base[-1]["train_seconds"]))
    table = (out / "summary.md").read_text()
    assert "teacher's final test acc" in table and table.splitlines()[2].startswith("| baseline_cifar_resnet8_s0 | 6 |")


@bash
def test_reproduce_frontier_trains_the_budgets_once_and_holds_a_run_against_them(small_zip, tmp_path):
    out = tmp_path / "frontier"
    env = _env(tmp_path, DATA=str(small_zip), EXTRA="--batch-size 100")
    grown = tmp_path / "grown_s0"
    subprocess.run([sys.executable, "-m", "resgrow", "train", "--arch", "cifar_resnet14", "--data", str(small_zip),
                    "--epochs", "2", "--batch-size", "100", "--method", "multilevel", "--start-blocks", "1-1-1",
                    "--quiet", "--out", str(grown)], env=env, check=True, capture_output=True)
    _script("reproduce_frontier.sh", out, "cifar_resnet14", "1 3", 0, grown, env=env)
    said = _script("reproduce_frontier.sh", out, "cifar_resnet14", "1 3", 0, grown, env=env)
    assert said.count("finished already") == 2
    assert sorted(_logs(out)) == ["baseline_cifar_resnet14_1ep_s0", "baseline_cifar_resnet14_3ep_s0"]
    table = (out / "frontier.md").read_text()
    assert "| 1 epochs | 1 |" in table and "| 3 epochs | 1 |" in table and "| grown | 1 |" in table


@bash
def test_reproduce_trainer_benches_checks_folded_h_and_determinism(small_zip, tmp_path):
    out = tmp_path / "trainer"
    said = _script("reproduce_trainer.sh", out, env=_env(tmp_path, DATA=str(small_zip), ARCHS="cifar_resnet8",
                   BATCHES="16", STEPS="2", GROWN="cifar_resnet14", FOLD_STEPS="3", DET_ARCH="cifar_resnet8", DET_EPOCHS="1"))
    bench = json.loads((out / "bench_cifar_resnet8_b16.json").read_text())
    assert bench["results"][0]["variant"] == "eager fp32" and bench["results"][0]["img_per_s"] > 0
    assert json.loads((out / "bench_cifar_resnet14_h0.25.json").read_text())["h"] == 0.25
    assert "largest parameter/buffer difference, folded vs not: 0\n" in said
    assert "deterministic: identical True" in said and "plain: identical" in said


def test_determinism_check_fails_when_the_deterministic_pair_differs(small_zip, tmp_path, monkeypatch):
    determinism_check = _script_module("determinism_check")
    trained = iter([[(1.0, 0.5)], [(1.0, 0.5)], [(1.0, 0.5)], [(1.0, 0.6)]])  # plain pair equal, deterministic not
    monkeypatch.setattr(determinism_check, "resgrow", lambda argv: 0)
    monkeypatch.setattr(determinism_check, "epochs_of", lambda run: next(trained))
    monkeypatch.setattr(sys, "argv", ["determinism_check.py", "--data", str(small_zip), "--out", str(tmp_path)])
    assert determinism_check.main() == 1


def test_together_check_runs_and_finds_runs_together_equal_to_alone(small_zip, tmp_path):
    """The together check: its speed line, and weights equal bit for bit alone and together."""
    report = tmp_path / "together_check.json"
    done = subprocess.run([sys.executable, "scripts/together_check.py", "--data", str(small_zip), "--device", "cpu",
                           "--arch", "cifar_resnet8", "--small", "cifar_resnet8", "--epochs", "2", "--json", str(report)],
                          cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["same_as_alone"] == [True, True] and result["speed"]["work_per_second_vs_alone"] > 0
    assert "cifar_resnet8: last epoch alone" in done.stdout and done.stdout.count("together equals alone") == 2


def _script_module(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def test_growth_epochs_reads_where_a_finished_run_grew(capsys):
    main = _script_module("growth_epochs").main
    said = []
    for s in (0, 1):
        assert main([str(ROOT / f"benchmarks/depth/160ep/lipgrow_r74_s{s}"), "160"]) == 0
        said.append(capsys.readouterr().out)
    assert said == ["27,83\n", "22,80\n"]
    for run, epochs in (("lipgrow_r74_s0", "40"), ("baseline_r74_s0", "160"), ("no_such_run", "160")):
        assert main([str(ROOT / "benchmarks/depth/160ep" / run), epochs]) == 1, run
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("growth_epochs: "), run


@bash
def test_reproduce_cpu_logs_the_machine_probes_before_and_after_and_resumes_a_stopped_table(small_zip, tmp_path):
    out = tmp_path / "cpu"
    env = _env(tmp_path, DATA=str(small_zip), ARCH="cifar_resnet8", EPOCHS="3", BUDGETS="3", ROWS="frontier widen",
               METHOD_FLAGS="--growths 1 --widen-every 1", BUSY_WARN="1000")
    said = _script("reproduce_cpu.sh", out, "width", 0, env=dict(env, STOP_AFTER="1"))  # cut short
    assert said.count(": training\n") == 2
    said = _script("reproduce_cpu.sh", out, "width", 0, env=env)  # the same command goes on
    assert said.count(": training (resumed)\n") == 2
    logs = _logs(out)
    assert sorted(logs) == ["baseline_cifar_resnet8_3ep_s0", "widen_cifar_resnet8_s0"]
    assert [len(v) for v in logs.values()] == [3, 3]
    runs = [json.loads((out / d / "run.json").read_text()) for d in logs]
    assert all(r["device"] == "cpu" and r["precision"] for r in runs)
    machine = (out / "machine.log").read_text().splitlines()
    assert len(machine) == 2 + 2 + 2 + 2 and "probe (start)" in machine[0] and "load average" in machine[1]
    assert all("threads, torch" in line and "% in the second before" in line for line in machine)
    probes = (out / "probes.log").read_text().splitlines()
    assert [p.split()[1] for p in probes] == ["start", "end"] * 2 and all(p.endswith(" img/s") for p in probes)
    assert "widen_cifar_resnet8_s0" in (out / "frontier.md").read_text() and (out / "frontier.png").stat().st_size > 0
    assert "final-net epochs" not in (out / "frontier.md").read_text()  # one machine: seconds
    widen = out / "widen_cifar_resnet8_s0" / "run.json"  # a row timed on another machine: the epoch clock
    widen.write_text(json.dumps(dict(json.loads(widen.read_text()), cpu="Another CPU")))
    said = _script("reproduce_cpu.sh", out, "width", 0, env=dict(env, BUSY_WARN="-1"))  # finished: nothing trains
    assert ": training" not in said and len((out / "probes.log").read_text().splitlines()) == 4  # nor probed
    # too few epochs at the final size for the epoch clock (it says why on stderr): seconds, with the warning
    assert "not the same device" in (out / "frontier.md").read_text() and "Another CPU" in (out / "frontier.md").read_text()
    # a row resumed on another machine (run.json's history, not its own machine): the epoch clock is tried too
    here = json.loads((out / "baseline_cifar_resnet8_3ep_s0" / "run.json").read_text())["cpu"]
    moved = [{"cpu": here, "gpu": None, "from_epoch": 0}, {"cpu": "Another CPU", "gpu": None, "from_epoch": 2}]
    widen.write_text(json.dumps(dict(json.loads(widen.read_text()), cpu=here, machines=moved)))
    err = _script("reproduce_cpu.sh", out, "width", 0, env=env, stream="stderr")
    assert "--clock epochs: " in err and "has no plain epochs" in err
    assert "widen_cifar_resnet8_s0 trained on 2 machines" in (out / "frontier.md").read_text()  # seconds, warned


@bash
def test_reproduce_cpu_depth_trains_the_frontier_the_depth_rows_and_mgopt_and_holds_them_against_it(small_zip, tmp_path):
    out = tmp_path / "depth"
    env = _env(tmp_path, DATA=str(small_zip), ARCH="cifar_resnet26", START="1-1-1", EPOCHS="3", BUDGETS="3",
               ROWS="frontier multilevel restarts mgopt_every4", BUSY_WARN="1000", MG_EPOCHS="1 2 1")
    said = _script("reproduce_cpu.sh", out, "depth", 0, env=env)
    assert said.count(": training\n") == 4
    logs = _logs(out)
    assert sorted(logs) == ["baseline_cifar_resnet26_3ep_s0",
                            "baseline_restarts_r26_s0", "mgopt_every4_r26_2ep_s0", "multilevel_r26_s0"]
    run = {d: json.loads((out / d / "run.json").read_text()) for d in logs}
    assert run["multilevel_r26_s0"]["method"].startswith("multilevel") and "1-1-1" in run["multilevel_r26_s0"]["command"]
    assert run["baseline_restarts_r26_s0"]["config"]["restarts"] == [1.0, 2.0]  # 37.5% and 68.75% of 3 epochs
    mg = run["mgopt_every4_r26_2ep_s0"]  # its own epochs (MG_EPOCHS), not the table's
    assert "--mg-every 4" in mg["command"] and "--levels 2" in mg["command"] and mg["config"]["epochs"] == 2
    table = (out / "frontier.md").read_text()  # the restart baseline is held against the frontier, not part of it
    assert all(name in table for name in ("baseline_restarts_r26_s0", "multilevel_r26_s0", "mgopt_every4_r26_2ep_s0"))


@bash
def test_reproduce_cpu_compound_trains_its_rows_against_the_frontier(small_zip, tmp_path):
    out = tmp_path / "compound"
    env = _env(tmp_path, DATA=str(small_zip), ARCH="cifar_resnet26", START="1-1-1", EPOCHS="5", BUDGETS="5",
               ROWS="frontier compound_deep_alternate compound_lip", BUSY_WARN="1000")
    said = _script("reproduce_cpu.sh", out, "compound", 0, env=env)
    assert said.count(": training\n") == 3
    run = {d: json.loads((out / d / "run.json").read_text()) for d in _logs(out)}
    assert sorted(run) == ["baseline_cifar_resnet26_5ep_s0", "compound_deep_alternate_r26_s0", "compound_lip_r26_s0"]
    alternate = [json.loads(line) for line in (out / "compound_deep_alternate_r26_s0/metrics.jsonl").open()]
    assert [(r["blocks"], r["widths"]) for r in alternate] == [
        ("1-1-1", "8-16-32"), ("1-1-1", "8-16-32"), ("2-2-2", "8-16-32"), ("2-2-2", "16-32-64"), ("4-4-4", "16-32-64")]
    assert "--trigger lipschitz --lip-window 2" in run["compound_lip_r26_s0"]["command"]
    assert all(name in (out / "frontier.md").read_text() for name in ("compound_deep_alternate_r26_s0",
                                                                       "compound_lip_r26_s0"))


@bash
def test_reproduce_cpu_vit_trains_with_the_vit_recipe_and_stacks(small_zip, tmp_path):
    out = tmp_path / "vit"
    env = _env(tmp_path, DATA=str(small_zip), ARCH="vit2_64", EPOCHS="2", BUDGETS="2", ROWS="frontier stack",
               BUSY_WARN="1000")
    said = _script("reproduce_cpu.sh", out, "vit", 0, env=dict(env, MAX_ROWS="1"))  # a job with time for one row
    assert said.count(": training\n") == 1 and "stack_vit2_64_s0: left for the next invocation" in said
    assert len((out / "probes.log").read_text().splitlines()) == 2 and (out / "frontier.md").is_file()  # probe, table
    said = _script("reproduce_cpu.sh", out, "vit", 0, env=env)  # the next one trains the rest
    assert said.count(": training\n") == 1 and "baseline_vit2_64_2ep_s0: finished already" in said
    run = {d: json.loads((out / d / "run.json").read_text()) for d in _logs(out)}
    assert sorted(run) == ["baseline_vit2_64_2ep_s0", "stack_vit2_64_s0"]
    assert all(r["config"]["optimizer"] == "adamw" and r["config"]["lr"] == 1e-3 for r in run.values())
    assert "--deepen-mode stack" in run["stack_vit2_64_s0"]["command"]
