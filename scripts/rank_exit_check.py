"""Does every rank of a complete `torchrun` run exit with 0?

Launches the same 2-process CPU run (a depth growth after epoch 1) RUNS times and counts the exit codes
and the ranks that died of SIGABRT at exit ("terminate called ..."). `--slow-rank0 S` makes rank 0 wait
S seconds before it closes the process group, as it does when it writes a large last checkpoint: the other
rank then leaves first, which is when a process group that outlives `destroy_process_group` aborts it.
`--load N` keeps N busy-looping processes running for the whole check (a busy machine).

    python scripts/rank_exit_check.py --data data/cifar10-jpeg-mini.zip --runs 20 --out runs/exit_check
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["--arch", "cifar_resnet14", "--method", "multilevel", "--start-blocks", "1-1-1", "--epochs", "3",
           "--device", "cpu", "--quiet"]


def as_rank(argv: list[str]) -> int:
    """One torchrun worker: `resgrow train`, rank 0 slowed down before it closes the group."""
    slow, argv = float(argv[0]), argv[1:]
    from resgrow.train import distributed

    close = distributed.Ranks.close

    def slowed(ranks):
        if ranks.rank == 0:
            time.sleep(slow)
        close(ranks)

    distributed.Ranks.close = slowed
    from resgrow.cli import main as resgrow

    return resgrow(["train", *argv])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--as-rank":
        return as_rank(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="an ImageFolder zip (the mini CIFAR-10 zip is enough)")
    ap.add_argument("--out", required=True, help="a new folder for the runs")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--slow-rank0", type=float, default=0.0, help="seconds rank 0 waits before it closes the group")
    ap.add_argument("--load", type=int, default=0, help="busy-looping processes kept running meanwhile")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=False)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.load)]
    codes, aborts = [], 0
    try:
        for i in range(a.runs):
            with tempfile.TemporaryFile("w+") as log:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", __file__, "--as-rank",
                       str(a.slow_rank0), *COMMAND, "--data", a.data, "--out", str(out / f"run{i}")]
                code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ).returncode
                log.seek(0)
                text = log.read()
            aborts += "terminate called" in text
            codes.append(code)
            print(f"run {i + 1}/{a.runs}: exit "
                  f"{code}{' (a rank aborted at exit)' if 'terminate called' in text else ''}",
                  flush=True)
    finally:
        for p in burners:
            p.kill()
    bad = sum(c != 0 for c in codes)
    print(f"{a.runs} runs (rank 0 slowed {a.slow_rank0:g}s, {a.load} busy processes): {a.runs - bad} exited 0, {bad} "
          f"did not, {aborts} with a rank aborted at exit")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
