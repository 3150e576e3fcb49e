"""Several runs in one process, each in a thread of its own with its own CUDA stream.

A CIFAR ResNet's step leaves most of a big GPU idle: its kernels are small, and under a CUDA graph
the GPU runs them one after another. The graphs of two runs, replayed on two streams, can overlap,
so a sweep (seeds, a method and its restart baseline) may finish sooner together than one run after
another. Separate processes would not do: without MPS, the GPU time-slices between processes
instead of overlapping their kernels. Threads can, because a graph's replay releases the GIL.
torch allows one graph capture at a time per process, so captures take turns (one lock shared by the runs,
`Trainer.use_lock`), and so do temporary changes of process-wide cuDNN flags and evaluations (new shapes:
autotuning): see `LOCK_NOTE`.

The price is the clock. Each run's training seconds include the time the others held the GPU, so
they cannot be compared with a run trained alone: run.json lists the runs it shared the device with
(`shared_device`, kept when the run is resumed later), and `resgrow compare` warns. Use it for
accuracy (seeds, ablations, restart baselines), never for timing.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext

import torch

from ..errors import ResgrowError
from .trainer import Trainer

LOCK_NOTE = """What runs trained together in one process must not do at the same time, and so do holding one lock:
torch allows one CUDA graph capture at a time per process, and a capture must not meet cuDNN autotuning (a run
whose warm-up saw autotuning switched off, by another run's Lipschitz meter switching it off for its own call,
would autotune inside its capture, which fails). So captures with their warm-up, every temporary change of
process-wide cuDNN flags, a resumed run's restore of the CUDA generators' state, and evaluation (new shapes:
autotuning and workspace allocations, with their synchronisations) hold it. Replays take no lock: they are what
overlaps."""


def check_together(trainers: list[Trainer]) -> None:
    """What must hold before runs share a process: distinct run directories, one device, and the
    same process-wide settings (deterministic kernels); no torch.compile (not thread-safe)."""
    outs = [t.out for t in trainers]
    if None in outs:
        raise ResgrowError("runs trained together each need a run directory (out=...)")
    seen = set()
    for o in outs:
        if o.resolve() in seen:
            raise ResgrowError(f"two runs trained together write to the same directory {o}")
        seen.add(o.resolve())
    if len({str(t.device) for t in trainers}) > 1:
        devices = ", ".join(sorted({str(t.device) for t in trainers}))
        raise ResgrowError(f"runs trained together share one device; got {devices}")
    if len({t.cfg.deterministic for t in trainers}) > 1:
        raise ResgrowError("--deterministic sets process-wide flags: give it to every run trained together, or to none")
    if any(t.cfg.compile != "none" for t in trainers):
        raise ResgrowError("torch.compile is not thread-safe: runs trained together need --compile none")


def _record_sharing(trainers: list[Trainer]) -> None:
    """Each run names the others in run_info: its checkpoints keep it, and fit() writes it into run.json
    (a fresh run as it starts, a resumed one once it holds its run directory's lock)."""
    outs = [str(t.out) for t in trainers]
    for t in trainers:
        others = {o for o in outs if o != str(t.out)}
        t.run_info["shared_device"] = sorted(set(t.run_info.get("shared_device", [])) | others)


def fit_together(trainers: list[Trainer], until: int | None = None) -> list:
    """Run `trainer.fit(until)` of every trainer at once, one thread and (on CUDA) one stream each.

    Returns, per trainer, its log rows or the exception that ended it; one run's failure does not
    stop the others. `trainer.request_stop()` works as with `fit` (call it on each)."""
    check_together(trainers)
    _record_sharing(trainers)
    lock = threading.RLock()  # see LOCK_NOTE
    for t in trainers:
        t.use_lock(lock)
        t.label, t.bars = f"{t.out.name}: ", False
        if t.draws_random:
            t.say("warning: its model draws random numbers as it trains (dropout, say), from the one generator of the "
                   "process, which the runs trained together take turns on: it will not train exactly as it would "
                   "alone")
    cuda = trainers[0].device.type == "cuda"
    if cuda:  # the data and models were put there on this thread's stream: done before other streams read them
        torch.cuda.synchronize(trainers[0].device)
    results: list = [None] * len(trainers)

    def work(i: int, t: Trainer) -> None:
        try:
            with torch.cuda.stream(torch.cuda.Stream(t.device)) if cuda else nullcontext():
                results[i] = t.fit(until=until)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, which reports it per run
            results[i] = e

    threads = [threading.Thread(target=work, args=(i, t), name=f"resgrow-{t.out.name}", daemon=True)
               for i, t in enumerate(trainers)]
    for th in threads:
        th.start()
    for th in threads:
        while th.is_alive():  # a timeout, so that the main thread still runs signal handlers
            th.join(0.2)
    return results
