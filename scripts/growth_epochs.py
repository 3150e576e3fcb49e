"""The epochs at which a finished run grew, comma-separated: LipGrow's restart baseline restarts its lr there.

    python scripts/growth_epochs.py benchmarks/depth/160ep/lipgrow_r74_s0 160     # -> 27,83

Exit code 1, with a line on stderr, when the run did not end at that many epochs or never grew.
"""

from __future__ import annotations

import sys

from resgrow.errors import ResgrowError
from resgrow.report import load_run


def main(argv: list[str]) -> int:
    run, epochs = argv[0], int(argv[1])
    try:
        r = load_run(run)
    except (ResgrowError, OSError, ValueError) as e:
        print(f"growth_epochs: {e}", file=sys.stderr)
        return 1
    grown = [x["epoch"] for x in r.grow_rows]
    if r.epochs != epochs or not grown:
        print(f"growth_epochs: {run} ended at epoch {r.epochs} with growths at {grown}, not a finished {epochs}-epoch "
              "run that grew", file=sys.stderr)
        return 1
    print(",".join(map(str, grown)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
