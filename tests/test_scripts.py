"""The GPU scripts' plumbing, on CPU: what a session with a device sends must work the first time.

`scripts/gpu_pending.sh` drives `scripts/gpu_depth.sh` (the restart rows, resumable), then the GPU-only
checks, then `resgrow compare`. Here with a stand-in `nvidia-smi`, a tiny net, 4 epochs and the small zip.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _rows(runs: Path) -> dict:
    return {d.name: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in sorted(runs.iterdir()) if (d / "metrics.jsonl").is_file() and d.name.startswith("baseline")}


def _stand_in_gpu(tmp_path: Path) -> str:
    """A PATH whose `nvidia-smi` only prints a name (the scripts log it) and whose `python3` is this interpreter."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho stand-in GPU\n")
    (fake / "nvidia-smi").chmod(0o755)
    return os.pathsep.join([str(fake), str(Path(sys.executable).parent), os.environ["PATH"]])


@pytest.mark.skipif(shutil.which("bash") is None or os.name != "posix", reason="the scripts are bash")
def test_gpu_pending_trains_the_restart_rows_once_and_tables_them(small_zip, tmp_path):
    env = dict(os.environ, PATH=_stand_in_gpu(tmp_path),
               EPOCHS="4", ARCH="cifar_resnet8", LIP_RESTARTS="2", DATA=str(small_zip), RESGROW_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "out"

    def send():
        done = subprocess.run(["bash", "scripts/gpu_pending.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    said = send()
    rows = _rows(out / "runs")
    names = ["baseline_restarts_lip_r8_s0", "baseline_restarts_lip_r8_s1", "baseline_restarts_r8_s0", "baseline_restarts_r8_s1"]
    assert sorted(rows) == names and all([r["epoch"] for r in log] == [1, 2, 3, 4] for log in rows.values())
    for name in names:
        info = json.loads((out / "runs" / name / "run.json").read_text())
        cfg = info["config"]
        # multilevel's restarts at 37.5% and 68.75% of the run; LipGrow's at the epochs it was given
        want = ("cosine_reset", [2.0]) if "_lip_" in name else ("cosine_restarts", [2.0, 3.0])
        assert (cfg["schedule"], [float(r) for r in cfg["restarts"]]) == want, name
        assert cfg["seed"] == int(name[-1]) and not (out / "runs" / name / "checkpoint.pt").exists()
    assert "no CUDA device: the together check and the folded-h timing are skipped" in said
    table = (out / "summary_160ep.md").read_text()
    assert all(f"| {n} | 4 |" in table for n in names) and "| baseline_restarts_lip_r8 | 2 |" in table

    again = send()  # the same command again: nothing is trained twice
    assert again.count("finished in an earlier command") == 4 and _rows(out / "runs") == rows


@pytest.mark.skipif(shutil.which("bash") is None or os.name != "posix", reason="the scripts are bash")
@pytest.mark.parametrize("probe_limit", [None, "1"], ids=["probe", "probe_cut_short"])
def test_gpu_depth_together_probes_then_finishes_both_rows(small_zip, tmp_path, probe_limit):
    """Package 1's command: a 3-epoch probe of both seeds' rows together, a verdict kept for the next command,
    then both rows to the end (together or one by one, whichever the probe chose). A probe that has not ended
    after PROBE_LIMIT seconds (a hang, on a GPU) is stopped, and the rows go on one by one."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    env = dict(os.environ, PATH=_stand_in_gpu(tmp_path),
               TOGETHER="1", BUDGET="100000", RUNS="restarts", RUNDIR=str(runs), ARCH="cifar_resnet8",
               DATA=str(small_zip), RESGROW_CACHE=str(tmp_path / "cache"), **({"PROBE_LIMIT": probe_limit} if probe_limit else {}))
    done = subprocess.run(["bash", "scripts/gpu_depth.sh", str(out), "5", "0,1", "10"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = (runs / "together_verdict").read_text().strip()
    if probe_limit:  # 1 s: not even torch's import fits
        assert "together: the probe did not finish within PROBE_LIMIT=1 s" in done.stdout and verdict == "alone"
        assert not (out / "together_probe.txt").exists()
    else:
        probe = (out / "together_probe.txt").read_text()
        assert probe.startswith("together: 2 rows at ") and "x the work per second" in probe
        assert verdict in ("together", "alone")
    rows = _rows(runs)
    assert sorted(rows) == ["baseline_restarts_r8_s0", "baseline_restarts_r8_s1"]
    assert all([r["epoch"] for r in log] == [1, 2, 3, 4, 5] for log in rows.values())
    for name in rows if not probe_limit else ():  # the probe trained them together: run.json says so
        assert json.loads((runs / name / "run.json").read_text())["shared_device"] == [str(runs / (
            "baseline_restarts_r8_s1" if name.endswith("s0") else "baseline_restarts_r8_s0"))]


def test_together_check_runs_and_finds_runs_together_equal_to_alone(small_zip, tmp_path):
    """Package 3's together check, on CPU: its speed line, and weights equal bit for bit alone and together."""
    report = tmp_path / "together_check.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), RESGROW_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "scripts/together_check.py", "--data", str(small_zip), "--device", "cpu",
                           "--arch", "cifar_resnet8", "--small", "cifar_resnet8", "--epochs", "2", "--json", str(report)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["same_as_alone"] == [True, True] and result["speed"]["work_per_second_vs_alone"] > 0
    assert "cifar_resnet8: last epoch alone" in done.stdout and done.stdout.count("together equals alone") == 2


def test_fold_h_check_finds_folded_and_unfolded_steps_equal():
    """Package 3's numbers check (gpu_fold_h.sh runs it on the GPU): on CPU, bit-identical and exit code 0."""
    done = subprocess.run([sys.executable, "scripts/fold_h_check.py", "--arch", "cifar_resnet8", "--steps", "3",
                           "--device", "cpu"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "folded True: 3 blocks folded" in done.stdout
    assert done.stdout.rstrip().endswith("largest parameter/buffer difference, folded vs not: 0")


def test_growth_epochs_reads_lipgrows_committed_grows_for_its_restart_baseline():
    """Package 2 restarts the lr where the committed 160-epoch lipgrow rows grew (gpu_depth.sh, RUNS=restarts_lip)."""
    def growth_epochs(run, epochs):
        return subprocess.run([sys.executable, "scripts/growth_epochs.py", f"benchmarks/issue3/160ep/{run}", str(epochs)],
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")), capture_output=True, text=True)

    assert [growth_epochs(f"lipgrow_r74_s{s}", 160).stdout for s in (0, 1)] == ["27,83\n", "22,80\n"]
    for run, epochs in (("lipgrow_r74_s0", 40), ("baseline_r74_s0", 160), ("no_such_run", 160)):
        done = growth_epochs(run, epochs)
        assert done.returncode == 1 and done.stdout == "" and done.stderr.startswith("growth_epochs: "), run
