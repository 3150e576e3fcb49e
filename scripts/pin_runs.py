"""Pin the short runs of `tests/test_pinned_runs.py`: train them here, measure how far their numbers move
between numeric back-ends of this machine, and write `tests/pinned/runs.json` with tolerances of four
times the largest move, per method.

Two CPUs round differently: another vector unit (ATen's kernels), another oneDNN convolution, another
thread count. This machine stands in for others by running every pinned run under each of those back-ends
(`VARIANTS`: environment variables torch reads at start-up), each in a fresh pytest process. A method's spread
is the largest difference from its run as it is, over every back-end, epoch and number (losses relative,
accuracies absolute); its tolerance is four times that (two CPUs may differ more than two back-ends of one),
and never below one training image's worth of accuracy.

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
LOSSES, ACCS = ("train_loss",), ("train_acc",)  # what the test pins (its NUMBERS)
ONE_IMAGE = 1 / 400  # the small zip's training set has 400 images
FACTOR = 4  # tolerance over the largest spread measured
MIN_LOSS_REL = 1e-5  # where every back-end agrees to the last digits: still not bit for bit


def collect(env: dict, out: Path) -> dict:
    """Every pinned run's numbers under `env`, from a fresh pytest process."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_pinned_runs.py",
           "-k", "as_pinned"]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env, "RESGROW_PIN": str(out)}, capture_output=True,
                          text=True)
    if not out.exists():
        sys.exit(f"pin_runs: the pinned runs wrote nothing under {env}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def spread(reference: dict, other: dict) -> dict:
    """Per method: the largest relative loss and absolute accuracy difference of `other` from `reference`."""
    out = {}
    for method, run in reference.items():
        pairs = list(zip(run["rows"], other[method]["rows"], strict=True))
        out[method] = {"loss_rel": max(abs(a[k] - b[k]) / abs(a[k]) for a, b in pairs for k in LOSSES),
                       "acc_abs": max(abs(a[k] - b[k]) for a, b in pairs for k in ACCS)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spread-only", action="store_true", help="measure and print; leave runs.json as it is")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = {name: collect(env, Path(tmp) / f"{i}.json") for i, (name, env) in enumerate(VARIANTS.items())}
    reference = got["as is"]
    spreads = {name: spread(reference, runs) for name, runs in got.items() if name != "as is"}
    tolerance = {}
    for method in reference:
        worst = {k: max(s[method][k] for s in spreads.values()) for k in ("loss_rel", "acc_abs")}
        tolerance[method] = {"loss_rel": max(float(f"{FACTOR * worst['loss_rel']:.2g}"), MIN_LOSS_REL),
                             "acc_abs": max(FACTOR * worst["acc_abs"], ONE_IMAGE)}
        print(f"{method:>12}: losses moved up to {worst['loss_rel']:.2e} (relative), accuracies up to "
              f"{worst['acc_abs']:.4f}; tolerance {tolerance[method]['loss_rel']:.2g} and "
              f"{tolerance[method]['acc_abs']:.4f}")
    if a.spread_only:
        return 0
    PINNED.write_text(json.dumps({
        "where": f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}",
        "how": f"per method, tolerance = {FACTOR} x the largest spread between the numeric back-ends of "
               "scripts/pin_runs.py",
        "spread": spreads, "tolerance": tolerance, "runs": reference}, indent=1) + "\n")
    print(f"wrote {PINNED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
