"""Pin the short runs of `tests/test_pinned_runs.py`: train them here, measure how far their numbers move
between numeric back-ends of this machine, and write `tests/pinned/runs.json` with tolerances of twice
the largest move.

Two CPUs round differently: another vector unit (ATen's kernels), another oneDNN convolution, another
thread count. This machine stands in for others by running every pinned run under each of those back-ends
(`VARIANTS`: environment variables torch reads at start-up), each in a fresh pytest process. The spread is
the largest difference from the run as it is, over every method, epoch and number (losses relative,
accuracies absolute); the tolerance is twice it, and never below one test image's worth of accuracy.

    python scripts/pin_runs.py                 # after a change meant to alter the numbers
    python scripts/pin_runs.py --spread-only   # measure and print, write nothing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PINNED = ROOT / "tests" / "pinned" / "runs.json"
VARIANTS = {  # name: environment
    "as is": {},
    "one thread": {"OMP_NUM_THREADS": "1"},
    "ATen AVX2 kernels": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATen scalar kernels": {"ATEN_CPU_CAPABILITY": "default"},
    "oneDNN AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN SSE4.1": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
}
LOSSES, ACCS = ("train_loss", "test_loss"), ("train_acc", "test_acc")
ONE_TEST_IMAGE = 0.01  # the small zip's test set has 100 images


def collect(env: dict, out: Path) -> dict:
    """Every pinned run's numbers under `env`, from a fresh pytest process."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_pinned_runs.py", "-k", "as_pinned"]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env, "RESGROW_PIN": str(out)}, capture_output=True, text=True)
    if not out.exists():
        sys.exit(f"pin_runs: the pinned runs wrote nothing under {env}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def spread(reference: dict, other: dict) -> dict:
    """The largest relative loss and absolute accuracy difference of `other` from `reference`."""
    worst = {"loss_rel": 0.0, "acc_abs": 0.0}
    for method, run in reference.items():
        for a, b in zip(run["rows"], other[method]["rows"], strict=True):
            worst["loss_rel"] = max(worst["loss_rel"], *(abs(a[k] - b[k]) / abs(a[k]) for k in LOSSES))
            worst["acc_abs"] = max(worst["acc_abs"], *(abs(a[k] - b[k]) for k in ACCS))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spread-only", action="store_true", help="measure and print; leave runs.json as it is")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = {name: collect(env, Path(tmp) / f"{i}.json") for i, (name, env) in enumerate(VARIANTS.items())}
    reference = got["as is"]
    spreads = {name: spread(reference, runs) for name, runs in got.items() if name != "as is"}
    for name, s in spreads.items():
        print(f"{name:>20}: losses within {s['loss_rel']:.2e} (relative), accuracies within {s['acc_abs']:.3f}")
    largest = {k: max(s[k] for s in spreads.values()) for k in ("loss_rel", "acc_abs")}
    tolerance = {"loss_rel": float(f"{2 * largest['loss_rel']:.2g}") or 1e-6,
                 "acc_abs": max(2 * largest["acc_abs"], ONE_TEST_IMAGE)}
    print(f"tolerance: losses {tolerance['loss_rel']:.2g} relative, accuracies {tolerance['acc_abs']:.3f}")
    if a.spread_only:
        return 0
    PINNED.write_text(json.dumps({
        "where": f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}",
        "how": "tolerance = twice the largest spread between the numeric back-ends of scripts/pin_runs.py",
        "spread": spreads, "tolerance": tolerance, "runs": reference}, indent=1) + "\n")
    print(f"wrote {PINNED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
