"""A per-epoch progress bar (tqdm, when installed and writing to a terminal); silent otherwise.

It shows img/s live, and the lr, the model size and the previous epoch's loss in its label. The
running loss of the current epoch would need a host sync per step. The full line (loss, accuracy,
test accuracy, img/s, size) is printed at the end of every epoch.
"""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, steps: int, batch_size: int, desc: str, enabled: bool = True):
        self.bar, self.batch_size = None, batch_size
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=steps * batch_size, desc=desc, unit="img", unit_scale=True, leave=False,
                            mininterval=0.5)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(self.batch_size)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
