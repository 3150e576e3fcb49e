"""The trainer: epochs of captured steps, evaluation, logs, checkpoints, and the size-change protocol.

Wall-clock accounting: `train_seconds` counts training steps, CUDA-graph captures and size
changes; evaluation, logging and checkpoint writes are excluded.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ..concurrency import GPU_LOCK
from ..config import TrainConfig
from ..data.loader import DeviceLoader, EvalLoader, channel_stats
from ..data.sources import Dataset
from ..errors import DivergedError, ResgrowError, first_line
from ..events import as_event, event, event_text
from ..measure.flops import flops_per_image, param_count
from ..methods.base import Baseline, Change, GroupedLr, Method, OwnModules, OwnObjective, OwnStep, RunContext
from ..models.custom import check_model
from ..models.resnet import ResNet, spec_of
from ..models.spec import ArchSpec
from .. import atomic
from ..report.metrics import MetricsLog, check_tensorboard
from .checkpoint import CHECKPOINT, PREVIOUS, load_run_checkpoint, save_checkpoint
from .compile import apply_compile
from .device import (CPU_CHANNELS_LAST_MULTIPLE, bf16_autocast, channels_last_suits, cpu_name, make_deterministic,
                     precision_note, resolve_device)
from .distributed import Ranks
from .groups import LrGroups, SliceScales
from .optim import carry_state, make_sgd
from .progress import Progress
from .run_dir import check_run_dir, never_trained
from .run_lock import RunLock
from .schedules import Schedule
from ..resume import check_resume
from .step import MethodStep, StepRunner, evaluate


def arch_of(model: nn.Module) -> ArchSpec | None:
    """The model's ArchSpec, or None for a model that is not a resgrow ResNet (trained as it is)."""
    return spec_of(model) if isinstance(model, ResNet) else None


def check_resizable(method: Method, model: nn.Module) -> None:
    """Any nn.Module trains at a fixed size; a method that changes the size needs a resgrow ResNet."""
    if method.resizes and arch_of(model) is None:
        raise ResgrowError(f"method {method.name!r} changes the model's size, which needs a resgrow ResNet "
                           f"(resgrow.models.build or ResNet(ArchSpec(...))), not a {type(model).__name__}")


class Trainer:
    """Train `model` on `data` with `config`; `method` may change the model's size at its hooks.

    With `out`, the run directory gets run.json, metrics.jsonl/csv and checkpoint.pt; an existing
    non-empty directory is refused unless `resume=True`, which continues from its checkpoint.
    """

    def __init__(self, model: nn.Module, data: Dataset, config: TrainConfig | None = None,
                 method: Method | None = None, out: str | Path | None = None, resume: bool = False,
                 run_info: dict | None = None, ranks: Ranks | None = None):
        self.cfg = config or TrainConfig()
        self.ranks = ranks or Ranks()  # several processes (torchrun): see train/distributed.py
        if not resume:  # a resumed run's config trained once already: a newer rule must not strand it
            self.cfg.validate()
        self.data, self.method = data, method or Baseline()
        self.out = Path(out) if out else None
        # Only rank 0 writes the run directory; every rank reads its checkpoint to resume.
        self.read_dir, self.out = self.out, (self.out if self.ranks.main else None)
        self.run_info = dict(run_info or {})
        self.device = resolve_device(self.cfg.device)
        cuda = self.device.type == "cuda"
        self.amp = bf16_autocast(self.cfg.precision if self.cfg.amp else "fp32", self.device, say=self.ranks.main)
        self.channels_last = self.cfg.channels_last
        self.use_graphs = self.cfg.graphs and cuda
        if self.cfg.tensorboard:
            if self.out is None:
                raise ResgrowError("TensorBoard logging needs a run directory (out=...)")
            check_tensorboard()
        if self.ranks.main:
            check_run_dir(self.out, resume)
        self.resume = resume
        if self.cfg.deterministic:
            make_deterministic()
        elif cuda:
            torch.backends.cudnn.benchmark = True
        if cuda and self.device.index is not None:  # cuda:N: graph capture and streams use the current device
            torch.cuda.set_device(self.device)

        self._make_loaders(data)
        self.schedule = Schedule(self.cfg.schedule, self.cfg.lr, self.cfg.epochs, eta_min=self.cfg.eta_min,
                                 warmup=self.cfg.warmup, milestones=self.cfg.milestones, gamma=self.cfg.gamma,
                                 restarts=self.cfg.restarts)
        # One lr tensor for the whole run: a captured optimizer step reads it in place.
        self.lr = torch.tensor(self.schedule(0.0), device=self.device) if self.use_graphs else self.schedule(0.0)
        self.groups = LrGroups(self.device, self.use_graphs)  # the method's parameter groups and their lr scales
        self.slices = SliceScales(self.device)  # its groups of elements inside parameters
        check_resizable(self.method, model)
        self.requested_spec, self.model_class = arch_of(model), type(model).__name__
        self.draws_random = False  # resgrow's ResNets draw nothing; a model of the user's own is checked below
        self.epoch, self.global_step, self.train_seconds = 0, 0, 0.0
        self.checkpoint_epoch = 0  # the epoch of the run's checkpoint (0: none yet)
        self.history: list[dict] = []
        self._pending_events: list[dict] = []
        self.log = MetricsLog(self.out, tensorboard=self.cfg.tensorboard,
                              method_columns=getattr(self.method, "log_columns", ())) if self.out else None
        self._lock = RunLock(self.out) if self.out else None  # held while fit() runs
        self.runner: StepRunner | None = None
        self._capture_seconds_done = 0.0  # captures of step runners already replaced by a size change
        self.stop_requested = False  # set by request_stop(): end after the current epoch, with a checkpoint
        self._stop_at = self.cfg.epochs  # the last epoch of a fit() call (fit(until=K): K), always checkpointed
        self.label, self.bars = "", True  # runs trained together: each line names its run; no interleaved bars
        self._install(model, method_groups=not resume)  # resumed: the checkpoint's model and method state replace them
        self._reference_flops = self._size["flops"]  # the requested net's: one of its gradients is the unit of work

    # ------------------------------------------------------------------ setup and the size-change protocol

    def _make_loaders(self, data) -> None:
        shard = dict(rank=self.ranks.rank, world=self.ranks.world)
        if data.streamed:  # files read as training goes (data/stream.py)
            from ..data.stream import IMAGENET_MEAN, IMAGENET_STD, StreamEval, StreamLoader, resolve_decode

            self.mean, self.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
            data.decode, decoder = resolve_decode(data.decode, data.augment, self.device)  # "auto": where, said in the first line
            self.loader = StreamLoader(data, self.cfg.batch_size, self.device, self.mean, self.std, seed=self.cfg.seed,
                                       channels_last=self.channels_last, workers=self.cfg.workers, decoder=decoder,
                                       **shard)
            self.test_loader = StreamEval(data.test, data.size, data.augment, self.cfg.eval_batch_size, self.device,
                                          self.mean, self.std, self.channels_last, workers=self.cfg.workers, **shard)
            self.val_loader = None
            return
        self.mean, self.std = channel_stats(data.train.images)
        self.loader = DeviceLoader(data.train, self.cfg.batch_size, self.device, self.mean, self.std,
                                   augment=self.cfg.augment, seed=self.cfg.seed, channels_last=self.channels_last, **shard)
        ev = lambda s, what: EvalLoader(s, self.cfg.eval_batch_size, self.device, self.mean, self.std,  # noqa: E731
                                        self.channels_last, what, **shard)
        self.test_loader = ev(data.test, "test")
        self.val_loader = ev(data.val, "validation") if data.val is not None else None

    def _install(self, model: nn.Module, old: tuple | None = None, param_map=None, method_groups: bool = True) -> dict | None:
        """Make `model` the one being trained: device, layout, optimizer (state carried), step runner.
        `method_groups`: ask the method for its parameter and element groups (not for a model about to be
        replaced by a checkpoint's, which the method's groups, loaded with its state, may not fit)."""
        model = self._lay_out(model.to(self.device))
        model.train()
        self._size = self._size_fields(model)  # before compiling: counting FLOPs runs a forward
        apply_compile(model, self.cfg.compile, self.cfg.compile_backend)
        grouped = method_groups and isinstance(self.method, GroupedLr)
        groups = self.groups.optimizer_groups(model, self.method.param_groups(model) if grouped else None, self.lr)
        self.slices.install(model, self.method.slice_groups(model) if grouped else None)
        opt = make_sgd(model, self.lr, self.cfg.momentum, self.cfg.weight_decay, self.cfg.nesterov, fused=self.use_graphs,
                       groups=groups)
        carried = None
        if old is not None:
            carried = carry_state(old[0], old[1], model, opt, param_map)
        self.model, self.optimizer = model, opt
        if self.runner is not None:
            self._capture_seconds_done += self.runner.capture_seconds
        self.wrapped = self._wrap(model)
        own_step = isinstance(self.method, OwnStep)
        objective = self.method.objective() if isinstance(self.method, OwnObjective) else None
        self.runner = StepRunner(self.wrapped, opt, self.loader, amp=self.amp,
                                 graph=self.use_graphs and not own_step,
                                 label_smoothing=self.cfg.label_smoothing,
                                 # the weight copies replace the plain forward, and bypass the fp32 parameters' hooks
                                 bf16_weights=self.cfg.bf16_weights and not self.slices.names
                                 and objective is None and not own_step,
                                 objective=objective, ranks=self.ranks,
                                 before_step=(lambda: self.groups.before_step(self.lr)) if self.groups.captured else None)
        return carried

    def _modules(self) -> dict[str, nn.Module]:
        """The method's modules beside the model (`OwnModules`)."""
        return self._modules() if isinstance(self.method, OwnModules) else {}

    def _place_modules(self) -> None:
        """The method's own modules on the run's device and layout, in place (the method keeps its references)."""
        for module in self._modules().values():
            module.to(self.device)
            if self._channels_last_for(module):
                module.to(memory_format=torch.channels_last)

    def _channels_last_for(self, module: nn.Module) -> bool:
        """channels_last where the run allows it and it is the faster layout for `module` here (on a CPU it depends
        on the widths: `channels_last_suits`)."""
        return self.channels_last and channels_last_suits(module, self.device)

    @property
    def layout_note(self) -> str:
        """The memory layout rule of this run, for its first line and run.json."""
        if not self.channels_last:
            return "NCHW"
        if self.device.type != "cpu":
            return "channels_last"
        now = "channels_last" if self.layout_channels_last else "NCHW"
        return f"channels_last where every batch norm's width is a multiple of {CPU_CHANNELS_LAST_MULTIPLE}, else NCHW (now {now})"

    def _lay_out(self, model: nn.Module) -> nn.Module:
        """The memory layout for this size of the model (`_channels_last_for`), and the inputs to match."""
        self.layout_channels_last = self._channels_last_for(model)
        for loader in (self.loader, self.test_loader, self.val_loader):
            if loader is not None:
                loader.normalize.channels_last = self.layout_channels_last
        return model.to(memory_format=torch.channels_last if self.layout_channels_last else torch.contiguous_format)

    @property
    def capture_seconds(self) -> float:
        """All CUDA-graph capture time of this run so far (part of train_seconds)."""
        return self._capture_seconds_done + self.runner.capture_seconds

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module the step runs. Multi-GPU training will wrap DDP here, re-created at every size change."""
        return model

    def apply_change(self, change: Change) -> dict:
        """Switch to `change.model`: carry momentum along `change.param_map`, keep the schedule
        position, drop the old CUDA graph (the next step captures a new one). Returns what each
        new parameter's state came from. Its time is booked as training time."""
        if not isinstance(change.model, ResNet):
            raise ResgrowError(f"a size change must hand over a resgrow ResNet, not {type(change.model).__name__}")
        t0 = time.perf_counter()
        if change.batch_size is not None and change.batch_size != self.loader.batch_size:
            self.loader.resize(change.batch_size)  # the new runner below captures with the new buffers
        carried = self._install(change.model, (self.model, self.optimizer), change.param_map)
        self.ranks.broadcast_([self.model, *self._modules().values()])  # new units drawn at random included
        self._sync()
        self.train_seconds += time.perf_counter() - t0
        self._pending_events.append(as_event(change.event))
        return carried

    def _ctx(self, row: dict | None = None) -> RunContext:
        return RunContext(model=self.model, epoch=self.epoch, epochs=self.cfg.epochs, step=self.global_step,
                          steps_per_epoch=self.loader.steps, schedule=self.schedule, train_seconds=self.train_seconds,
                          image_size=(self.loader.h, self.loader.w), row=row if row is not None else {},
                          history=self.history, batch_size=self.cfg.batch_size,
                          lr_scales={**self.groups.scales, **self.slices.scales}, set_lr_scales=self._set_lr_scales,
                          shared_value=lambda x: self.ranks.value(x, self.device))

    def _change_of(self, ctx: RunContext, change: Change | None) -> Change | None:
        """What a hook asks for: its Change, or the current model installed again (`ctx.reinstall`)."""
        if change is None and ctx.reinstalled is not None:
            return Change(self.model, {n: n for n, _ in self.model.named_parameters()}, ctx.reinstalled)
        return change

    def _optimizer_factory(self, params, lr: float) -> torch.optim.SGD:
        """SGD with the run's momentum, weight decay and Nesterov flag, for modules a method trains itself."""
        return torch.optim.SGD(params, lr=lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay,
                               nesterov=self.cfg.nesterov)

    def _set_lr_scales(self, values: dict) -> None:
        rest = self.slices.update(values)
        if rest:
            self.groups.update({k: values[k] for k in rest})

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "epoch": self.epoch, "global_step": self.global_step, "train_seconds": self.train_seconds,
            "spec": _dict(arch_of(self.model)), "requested_spec": _dict(self.requested_spec),
            "model_class": self.model_class,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "momentum": [self.optimizer.state[p]["momentum_buffer"].detach().cpu() for p in self.model.parameters()],
            "schedule": self.schedule.state_dict(), "lr_scales": dict(self.groups.scales),
            "slice_scales": dict(self.slices.scales), "batch_size": self.loader.batch_size,
            "modules": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in self._modules().items()},
            "method": {"name": self.method.name, "state": self.method.state_dict()},
            "config": self.cfg.to_dict(), "rng": rng, "run_info": self.run_info,
            "data_cfg": self.data_cfg(), "world_size": self.ranks.world, "bf16": self.amp,
            "channels_last": self.channels_last,
        }

    def data_cfg(self) -> dict:
        """How the model's inputs are prepared, stored so that the trained model can be used alone."""
        h, w, c = self.data.image_shape
        return {"mean": list(self.mean), "std": list(self.std), "input_size": [c, h, w], "classes": list(self.data.classes)}

    def load_state_dict(self, ck: dict, source: str = "checkpoint") -> None:
        try:
            if (ck["spec"] is None) != (self.requested_spec is None) or ck.get("model_class", "ResNet") != self.model_class:
                raise ResgrowError(f"{source} holds a {ck.get('model_class', 'ResNet')}, not the given {self.model_class}")
            self._check_same_data(ck.get("data_cfg"), source)
            if ck.get("world_size", 1) != self.ranks.world:
                n = ck.get("world_size", 1)
                raise ResgrowError(f"{source} was trained by {n} process{'es' * (n > 1)}, and its batches are sharded "
                                   f"so: resume it with {n} (torchrun --nproc_per_node {n}), not {self.ranks.world}")
            if ck["method"]["name"] != self.method.name:
                raise ResgrowError(f"{source} was trained with method {ck['method']['name']!r}, not {self.method.name!r}")
            check_resume(self.cfg, self.method, ck, source)
            if ck["spec"] is None:  # a model of the user's own: load into the one given
                self._load_model_state(self.model, ck)
                return
            spec, requested = ArchSpec.from_dict(ck["spec"]), ArchSpec.from_dict(ck["requested_spec"])
            if requested != self.requested_spec:
                raise ResgrowError(f"{source} was trained for {ck.get('run_info', {}).get('arch', 'another arch')} "
                                   f"({requested.block}, blocks {requested.blocks_str()}, widths {requested.widths_str()}), "
                                   f"not the requested {self.requested_spec.block}, blocks {self.requested_spec.blocks_str()}, "
                                   f"widths {self.requested_spec.widths_str()}")
            self._load_model_state(ResNet(spec), ck)
        except ResgrowError:
            raise
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise ResgrowError(f"{source} does not match the model or is incomplete ({first_line(e)})") from None

    def _check_same_data(self, stored: dict | None, source: str) -> None:
        """A resumed run must see the data it was trained on: same classes, image size and pixel
        statistics (a file replaced under the same path would otherwise go unnoticed)."""
        if not stored:  # checkpoints written before resgrow stored data_cfg
            return
        now = self.data_cfg()
        for key, what in (("classes", "classes"), ("input_size", "image size (C, H, W)")):
            if list(stored[key]) != now[key]:
                raise ResgrowError(f"{source} was trained on data with {what} {stored[key]}, this data has {now[key]}")
        if any(abs(a - b) > 1e-6 for a, b in zip(stored["mean"] + stored["std"], now["mean"] + now["std"])):
            raise ResgrowError(f"{source} was trained on other images: the training set's pixel mean/std differ "
                               f"({[round(x, 4) for x in stored['mean']]} then, {[round(x, 4) for x in now['mean']]} now)")

    def _load_model_state(self, model: nn.Module, ck: dict) -> None:
        self.method.load_state_dict(ck["method"]["state"])  # before the install: its groups may depend on it
        model = self.method.attach(model)  # modules a method's phase puts on the model
        model.load_state_dict(ck["model"])
        for name, module in self._modules().items():
            module.load_state_dict(ck["modules"][name])
        self._place_modules()
        self.groups.scales = dict(ck.get("lr_scales", {}))
        self.slices.scales = dict(ck.get("slice_scales", {}))
        if ck.get("batch_size", self.loader.batch_size) != self.loader.batch_size:
            self.loader.resize(ck["batch_size"])
        self.amp = ck.get("bf16", self.amp)  # "auto" chose on the machine the run started on: the run keeps it
        self._install(model)
        for p, m in zip(self.model.parameters(), ck["momentum"], strict=True):
            self.optimizer.state[p]["momentum_buffer"].copy_(m)
        self.schedule.load_state_dict(ck["schedule"])
        self.epoch, self.global_step, self.train_seconds = ck["epoch"], ck["global_step"], ck["train_seconds"]
        self.checkpoint_epoch = self.epoch
        torch.set_rng_state(ck["rng"]["cpu"])
        if "cuda" in ck["rng"] and torch.cuda.is_available() and len(ck["rng"]["cuda"]) == torch.cuda.device_count():
            with GPU_LOCK:  # process-wide generator state: not while another run trained together captures
                torch.cuda.set_rng_state_all(ck["rng"]["cuda"])

    def _save(self) -> None:
        if self.out is not None:
            save_checkpoint(self.state_dict(), self.out / CHECKPOINT, keep=PREVIOUS)
            self.checkpoint_epoch = self.epoch

    # ------------------------------------------------------------------ the loop

    def request_stop(self) -> None:
        """Stop after the epoch in progress, writing a checkpoint whatever `checkpoint_every` says.

        Safe to call from a signal handler (the CLI does on SIGTERM, e.g. a cluster's preemption
        notice): it only sets a flag that the loop reads between epochs.
        """
        self.stop_requested = True

    def fit(self, until: int | None = None) -> list[dict]:
        """Train to `config.epochs` (or stop after epoch `until`, resumable). Returns the log rows."""
        if self._lock is not None:
            self._lock.acquire()  # creates the directory; a second process on it stops here
        try:
            return self._fit(until)
        finally:
            if self.log is not None:
                self.log.close()
            if self._lock is not None:
                self._lock.release()

    def _fit(self, until: int | None) -> list[dict]:
        fresh = self.epoch == 0 and self.global_step == 0
        if self.out is not None and (self.resume or fresh):
            check_run_dir(self.out, self.resume)  # again, now under the lock: decisive
        if self.resume:
            ck, path = load_run_checkpoint(self.read_dir, self._say)
            self.load_state_dict(ck, f"checkpoint {path}")
            if self.log is not None:
                self.log.truncate(self.epoch)
            self.history = [r for r in MetricsLog(self.read_dir).rows() if r["epoch"] <= self.epoch]
            self.resume = False
            self._say(f"resumed {self.out} at epoch {self.epoch}/{self.cfg.epochs} ({self.train_seconds:.1f}s trained)")
            if self.run_info.get("shared_device"):  # resumed in `together` (train/together.py): run.json says so
                self._update_run_json(shared_device=self.run_info["shared_device"])
        elif fresh:
            if self.out is not None and never_trained(self.out):
                self._say(f"{self.out} holds a run that stopped before its first epoch ended: starting it again")
            # Before run.json: a method that rejects its options leaves no file behind, and run.json
            # records the options it resolved (e.g. the growth epochs scaled to --epochs).
            self.ranks.same_rng(self.device)
            ctx = self._ctx()
            change = self._change_of(ctx, self.method.on_run_start(ctx))
            self._place_modules()
            if change is not None:
                self.apply_change(change)
            self.ranks.broadcast_([self.model, *self._modules().values()])  # one start on every rank
            self._write_run_info()
        stop = self.cfg.epochs if until is None else min(until, self.cfg.epochs)
        self._stop_at = stop  # the last epoch of this call always gets a checkpoint: it is where a resume starts
        while self.epoch < stop and not self.stop_requested:
            self._train_epoch()
        return self.history

    def _train_epoch(self) -> None:
        cfg, steps, e = self.cfg, self.loader.steps, self.epoch
        self.loader.start_epoch(e)
        self.runner.reset_metrics()
        prev = f" loss {self.history[-1]['train_loss']:.3f}" if self.history else ""
        factor = self.loader.batch_size / cfg.batch_size  # a method's batch size brings its lr along
        bar = Progress(steps, self.loader.batch_size, f"epoch {e + 1}/{cfg.epochs} lr {self.schedule(e):.3g} "
                       f"{self._size.get('blocks', self.model_class)}{prev}", enabled=self.bars and not cfg.quiet and self.ranks.main)
        captures_before = self.capture_seconds
        own_step = isinstance(self.method, OwnStep)
        self._sync()
        t0 = time.perf_counter()
        for i in range(steps):
            lr = self.schedule(e + i / steps) * factor
            if self.use_graphs:
                self.lr.fill_(lr)
            else:
                self.groups.set_eager(self.optimizer, lr)
            if own_step:
                self.method.train_step(MethodStep(self.runner, lr, self.epoch, cfg.epochs, self._optimizer_factory))
            else:
                self.runner.run()
            self.global_step += 1
            bar.update()
            if self.method.step_interval and self.global_step % self.method.step_interval == 0:
                self.ranks.same_rng(self.device)
                ctx = self._ctx()
                change = self._change_of(ctx, self.method.on_step(ctx))
                if change is not None and change.batch_size is not None:
                    raise ResgrowError("a method changes the batch size at an epoch's end (on_epoch_end), not in on_step")
                if change is not None:
                    t_change = time.perf_counter()
                    self.apply_change(change)
                    t0 += time.perf_counter() - t_change  # apply_change books its own time
        train_loss, train_acc = self.runner.read_metrics(steps)  # syncs
        for module in (self.model, *self._modules().values()):  # MG/OPT's coarse levels have statistics too
            self.ranks.average_buffers(module)
        seconds = time.perf_counter() - t0
        bar.close()
        self.train_seconds += seconds
        self.epoch = e + 1

        row = {"epoch": self.epoch, "train_seconds": round(self.train_seconds, 3), "epoch_seconds": round(seconds, 3),
               "capture_seconds": round(self.capture_seconds - captures_before, 3),
               "train_loss": train_loss, "train_acc": train_acc, "lr": lr,
               "img_per_s": round(steps * self.loader.batch_size * self.ranks.world / seconds, 1), "batch_size": self.loader.batch_size}
        if self.data.streamed:  # how much of the epoch the step waited for the workers: is the run input-bound?
            row["data_wait_seconds"] = round(self.loader.wait_seconds, 3)
        if not math.isfinite(train_loss):
            row["events"] = self._pending_events + [event("diverged", "diverged")]
            self._write_row(row)
            last = self.checkpoint_epoch  # with --checkpoint-every k, not always the epoch before
            where = (f"last good checkpoint {self.out / CHECKPOINT} (epoch {last})" if self.out and last > 0
                     else "no checkpoint was written before it")
            raise DivergedError(f"training loss became {train_loss} in epoch {self.epoch}; stopped; {where}. "
                                "Try a lower --lr or a warm-up.")
        if self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs:
            t_eval = time.perf_counter()
            with GPU_LOCK:  # new shapes (cuDNN autotuning, workspaces): never inside another run's capture
                row["test_loss"], row["test_acc"] = evaluate(self.model, self.test_loader, self.amp, self.ranks)
                if self.val_loader is not None:
                    row["val_loss"], row["val_acc"] = evaluate(self.model, self.val_loader, self.amp, self.ranks)
            row["eval_seconds"] = round(time.perf_counter() - t_eval, 3)  # not training time; logged to plan runs
        row.update(self._size)
        # The epoch's work in gradients of the requested net: one of the current net's a step, and what the method
        # adds (a method with a step of its own counts all of its work)
        row["steps"] = steps
        work = 0.0 if own_step else steps * self._size["flops"] / self._reference_flops
        row["grad_equivalents"] = round(work, 3)
        t0 = time.perf_counter()
        self.ranks.same_rng(self.device)
        ctx = self._ctx(row)
        change = self._change_of(ctx, self.method.on_epoch_end(ctx))
        row["grad_equivalents"] = round(work + ctx.work, 3)
        self.ranks.same(f"the change after epoch {self.epoch}", _change_text(change))
        self.stop_requested = self.ranks.any(self.stop_requested, self.device)  # every rank stops after one epoch
        self._sync()
        row["method_seconds"] = round(time.perf_counter() - t0, 4)  # a method's decisions cost training time
        self.train_seconds += row["method_seconds"]
        if change is not None and self.epoch < cfg.epochs:
            self.apply_change(change)
            row.update({f"after_{k}": v for k, v in self._size.items()})
        row["train_seconds"] = round(self.train_seconds, 3)  # with the method's time and the size change
        row["events"] = self._pending_events
        self._pending_events = []
        self._write_row(row)
        if self.epoch % cfg.checkpoint_every == 0 or self.epoch == self._stop_at or self.stop_requested:
            self._save()

    def _size_fields(self, model: nn.Module) -> dict:
        """What the log says about the model's size; for a model of the user's own, its class name."""
        h, w, c = self.loader.h, self.loader.w, self.data.image_shape[-1]
        spec = arch_of(model)
        if spec is None:
            checked = check_model(model, (c, h, w), self.data.num_classes)  # also counts its FLOPs
            self.draws_random = checked.draws
            return {"params": param_count(model), "flops": checked.flops, "model": self.model_class}
        return {"params": param_count(model), "flops": flops_per_image(spec, (h, w)),
                "blocks": spec.blocks_str(), "widths": spec.widths_str(), "spec": spec.to_dict()}

    def _write_row(self, row: dict) -> None:
        self.history.append(row)
        if self.log is not None:
            self.log.append(row)
        if not self.cfg.quiet:
            self._say(format_row(row, self.cfg.epochs, self.method.progress(row)))

    def _write_run_info(self) -> None:
        if self.out is None:
            return
        import json
        import platform

        info = dict(self.run_info, config=self.cfg.to_dict(), spec=_dict(self.requested_spec), model_class=self.model_class,
                    method=self.method.describe(), reference_flops=self._reference_flops, world_size=self.ranks.world,
                    global_batch_size=self.cfg.batch_size * self.ranks.world,
                    report_columns=[dataclasses.asdict(c) for c in self.method.report_columns],
                    dataset=self.data.summary(), device=str(self.device), torch=torch.__version__, python=platform.python_version(),
                    gpu=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
                    cpu=cpu_name() if self.device.type == "cpu" else None, threads=torch.get_num_threads(),
                    precision=precision_note(self.amp, self.device),
                    fast_path={"amp_bf16": self.amp, "channels_last": self.channels_last, "layout": self.layout_note,
                               "cuda_graphs": self.use_graphs,
                               "bf16_weights": self.runner.lowp is not None,
                               "compile": self.cfg.compile})
        atomic.write_text(self.out / "run.json", json.dumps(info, indent=2) + "\n")

    def _sync(self) -> None:
        """Wait for this run's GPU work, for the clock: its stream, not the device, so that runs trained
        together (train/together.py) do not wait for each other."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def _update_run_json(self, **fields) -> None:
        import json

        path = self.out / "run.json"
        if path.is_file():
            atomic.write_text(path, json.dumps(dict(json.loads(path.read_text()), **fields), indent=2) + "\n")

    def _say(self, msg: str) -> None:
        if self.ranks.main:  # several processes: one voice
            print(self.label + msg, file=sys.stderr, flush=True)


def format_row(r: dict, epochs: int, method_says: str = "") -> str:
    test = f"  test {r['test_acc']:.2%}" if "test_acc" in r else ""
    val = f"  val {r['val_acc']:.2%}" if "val_acc" in r else ""
    said = f"  {method_says}" if method_says else ""
    ev = f"  [{'; '.join(map(event_text, r['events']))}]" if r.get("events") else ""
    return (f"epoch {r['epoch']:>4}/{epochs}  lr {r['lr']:.4g}  loss {r['train_loss']:.4f}  acc {r['train_acc']:.2%}{test}{val}"
            f"  {r['img_per_s']:,.0f} img/s{_wait_str(r)}  {r['train_seconds']:.1f}s  {_size_str(r)}"
            f"  {r.get('params', 0) / 1e6:.2f}M{said}{ev}")


def _wait_str(r: dict) -> str:
    if "data_wait_seconds" not in r or not r.get("epoch_seconds"):
        return ""
    return f" ({r['data_wait_seconds'] / r['epoch_seconds']:.0%} waiting for data)"


def _size_str(r: dict) -> str:
    return f"{r['blocks']} x {r['widths']}" if "blocks" in r else r.get("model", "?")


def _change_text(change) -> str:
    """What a change does, to check that every rank makes the same one."""
    if change is None:
        return "none"
    spec = arch_of(change.model)
    return f"{spec.blocks_str() + ' x ' + spec.widths_str() if spec else type(change.model).__name__}, batch {change.batch_size}"


def _dict(spec: ArchSpec | None) -> dict | None:
    return spec.to_dict() if spec is not None else None
