"""What runs trained together in one process (train/together.py) must not do at the same time.

torch allows one CUDA graph capture at a time per process, and a capture must not meet cuDNN
autotuning: a run whose warm-up saw autotuning switched off (the Lipschitz meter of another run
switches it off for its own call) would autotune inside its capture, which fails. So captures,
with their warm-up, every temporary change of process-wide cuDNN flags, and a resumed run's restore
of the CUDA generators' state hold this lock. So does evaluation, the one other place where a run
meets new shapes (the eval batch): their autotuning and workspace allocations, with the
synchronisations they bring, stay out of another run's capture. Replays take no lock: they are
what overlaps.
"""

from __future__ import annotations

import threading

GPU_LOCK = threading.RLock()
