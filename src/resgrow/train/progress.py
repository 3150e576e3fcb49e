"""A per-epoch progress bar (tqdm, when installed and writing to a terminal); silent otherwise.

The bar only counts steps: showing the running loss would need a host sync per step. The loss,
accuracy, img/s and model size appear in the line printed at the end of every epoch.
"""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=desc, unit="step", leave=False, mininterval=0.5)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
