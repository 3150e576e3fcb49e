"""The trainer: epochs of captured steps, evaluation, logs, checkpoints, and the size-change protocol.

Read top to bottom: set-up (device, loaders, schedule, the run directory), installing a model (layout,
optimizer, step), a change of size, the checkpoint state, then the loop: `fit` -> `_start` or `_resume` ->
`_train_epoch` (the steps, the epoch's row, the method's hook, the change it asks for, the checkpoint).

Wall-clock accounting: `train_seconds` counts training steps, CUDA-graph captures, the method's decisions and size
changes; evaluation, logging and checkpoint writes are excluded.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..data.loader import make_loaders
from ..errors import DivergedError, ResgrowError, first_line
from ..events import as_event, event, event_text
from ..measure.flops import flops_per_image, param_count
from ..methods.base import Baseline, Change, GroupedLr, Method, OwnModules, OwnObjective, OwnStep, RunContext
from ..models.custom import check_model
from ..models.family import Spec, growable_spec, model_for, spec_from_dict
from ..resume import check_resume
from .checkpoint import CHECKPOINT
from .compile import apply_compile
from .device import (
    CPU_CHANNELS_LAST_MULTIPLE,
    bf16_autocast,
    channels_last_suits,
    cpu_name,
    machine_text,
    nchw_at_odd_widths,
    precision_note,
    set_up_device,
)
from .distributed import Ranks
from .evaluation import Evaluator
from .groups import LrGroups, SliceScales
from .optim import carry_state, load_state_tensors, make_optimizer, state_tensors
from .progress import Progress
from .run_dir import RunDirectory
from .schedules import Schedule
from .step import MethodStep, StepRunner


def arch_of(model: nn.Module) -> Spec | None:
    """The model's spec, or None for a model that is not a resgrow ResNet or ViT (trained as it is)."""
    return growable_spec(model)


def check_resizable(method: Method, model: nn.Module) -> None:
    """Any nn.Module trains at a fixed size; a method that changes the size needs a resgrow model."""
    if method.resizes and arch_of(model) is None:
        raise ResgrowError(f"method {method.name!r} changes the model's size, which needs a resgrow ResNet or ViT "
                           f"(resgrow.models.build), not a {type(model).__name__}")


class Trainer:
    """Train `model` on `data` with `config`; `method` may change the model's size at its hooks.

    With `out`, the run directory gets run.json, metrics.jsonl/csv and checkpoint.pt; an existing
    non-empty directory is refused unless `resume=True`, which continues from its checkpoint.
    `lock`: shared by runs trained together in one process (train/together.py), held around what must not meet
    another run's CUDA-graph capture; a run alone needs none.
    """

    def __init__(self, model: nn.Module, data, config: TrainConfig | None = None, method: Method | None = None,
                 out: str | Path | None = None, resume: bool = False, run_info: dict | None = None,
                 ranks: Ranks | None = None, lock=None):
        self.cfg = config or TrainConfig()
        self.ranks = ranks or Ranks()  # several processes (torchrun): see train/distributed.py
        if not resume:  # a resumed run's config trained once already: a newer rule must not strand it
            self.cfg.validate()
        self.method, self.run_info, self.resume = method or Baseline(), dict(run_info or {}), resume
        self.lock = lock if lock is not None else nullcontext()
        self.device = set_up_device(self.cfg)  # every process-wide torch setting of the run is made there
        self.amp = bf16_autocast(self.cfg.precision if self.cfg.amp else "fp32", self.device, say=self.ranks.main)
        self.channels_last, self.use_graphs = self.cfg.channels_last, self.cfg.graphs and self.device.type == "cuda"
        self._open_run_dir(out, resume)
        self._open_data(data)
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
        self.runner: StepRunner | None = None
        self._capture_seconds_done = 0.0  # captures of step runners already replaced by a size change
        self.stop_requested = False  # set by request_stop(): end after the current epoch, with a checkpoint
        self._stop_at = self.cfg.epochs  # the last epoch of a fit() call (fit(until=K): K), always checkpointed
        self.label, self.bars = "", True  # runs trained together: each line names its run; no interleaved bars
        self._install(model, method_groups=not resume)  # resumed: the checkpoint's model and method state replace them
        self._reference_flops = self._size["flops"]  # the requested net's: one of its gradients is the unit of work

    # ------------------------------------------------------------------ set-up

    def _open_run_dir(self, out, resume: bool) -> None:
        """Only rank 0 writes the run directory; every rank reads its checkpoint to resume."""
        if out is None and (resume or self.cfg.tensorboard):
            raise ResgrowError("resume needs a run directory" if resume else
                               "TensorBoard logging needs a run directory (out=...)")
        self.run_dir = RunDirectory(out, writes=self.ranks.main, tensorboard=self.cfg.tensorboard,
                                    method_columns=self.method.log_columns) if out is not None else None
        self.out = Path(out) if out is not None and self.ranks.main else None
        if self.run_dir is not None:
            self.run_dir.check(resume)

    def _open_data(self, data) -> None:
        """The loaders and the evaluator; the dataset as the run reads it (`self.data`)."""
        cfg = self.cfg
        self.loaders = make_loaders(data, cfg.batch_size, cfg.eval_batch_size, self.device, seed=cfg.seed,
                                    augment=cfg.augment, channels_last=self.channels_last, workers=cfg.workers,
                                    rank=self.ranks.rank, world=self.ranks.world)
        self.data, self.loader = self.loaders.data, self.loaders.train
        self.mean, self.std = self.loaders.mean, self.loaders.std
        self.evaluator = Evaluator(self.loaders.test, self.loaders.val, self.ranks, self.lock)

    def use_lock(self, lock) -> None:
        """Runs trained together: hold `lock` around captures, evaluation and process-wide changes."""
        self.lock = self.evaluator.lock = self.runner.lock = lock

    # ------------------------------------------------------------------ installing a model, changing its size

    def _install(self, model: nn.Module, old: tuple | None = None, param_map=None,
                 method_groups: bool = True) -> dict | None:
        """Make `model` the one being trained: device, layout, optimizer (state carried), step runner.
        `method_groups`: ask the method for its parameter and element groups (not for a model about to be
        replaced by a checkpoint's, which the method's groups, loaded with its state, may not fit)."""
        model = self._lay_out(model.to(self.device))
        model.train()
        self._size = self._size_fields(model)  # before compiling: counting FLOPs runs a forward
        apply_compile(model, self.cfg.compile, self.cfg.compile_backend)
        grouped = method_groups and isinstance(self.method, GroupedLr)
        groups = self.groups.optimizer_groups(model, self.method.param_groups(model) if grouped else None, self.lr)
        self.slices.install(model, self.method.slice_groups(model) if grouped else None,
                            updates=self.cfg.optimizer == "adamw")
        opt = make_optimizer(model, self.cfg, self.lr, self.use_graphs, groups)
        carried = carry_state(old[0], old[1], model, opt, param_map) if old is not None else None
        self.model, self.optimizer = model, opt
        if self.runner is not None:
            self._capture_seconds_done += self.runner.capture_seconds
        self.runner = self._runner(model, opt)
        return carried

    def _runner(self, model: nn.Module, opt) -> StepRunner:
        own_step = isinstance(self.method, OwnStep)
        objective = self.method.objective() if isinstance(self.method, OwnObjective) else None
        return StepRunner(model, opt, self.loader, amp=self.amp, graph=self.use_graphs and not own_step,
                          label_smoothing=self.cfg.label_smoothing,
                          # the weight copies replace the plain forward, and bypass the fp32 parameters' hooks
                          bf16_weights=self.cfg.bf16_weights and not self.slices.names and objective is None
                          and not own_step,
                          objective=objective, ranks=self.ranks, lock=self.lock,
                          before_step=self._before_step(), after_step=self.slices.after_step
                          if self.slices.scales_updates else None)

    def _before_step(self):
        """What the step does right before the optimizer's: the groups' lr (captured), the weights that update
        scales start from."""
        work = ([lambda: self.groups.before_step(self.lr)] if self.groups.captured else []) + \
            ([self.slices.before_step] if self.slices.scales_updates else [])
        if not work:
            return None
        return work[0] if len(work) == 1 else (lambda: [w() for w in work])

    def method_modules(self) -> dict[str, nn.Module]:
        """The method's modules beside the model (`OwnModules`)."""
        return self.method.modules() if isinstance(self.method, OwnModules) else {}

    def _place_modules(self) -> None:
        """The method's own modules on the run's device and layout, in place (the method keeps its references)."""
        for module in self.method_modules().values():
            module.to(self.device)
            if self._channels_last_for(module):
                module.to(memory_format=torch.channels_last)

    def _channels_last_for(self, module: nn.Module) -> bool:
        """channels_last where the run allows it and it is the faster layout for `module` here (on a CPU with AMX it
        depends on the widths: `channels_last_suits`)."""
        return self.channels_last and channels_last_suits(module, self.device)

    @property
    def layout_note(self) -> str:
        """The memory layout rule of this run, for its first line and run.json."""
        if not self.channels_last:
            return "NCHW"
        if not nchw_at_odd_widths(self.device):
            return "channels_last"
        now = "channels_last" if self.layout_channels_last else "NCHW"
        return (f"channels_last where every batch norm's width is a multiple of {CPU_CHANNELS_LAST_MULTIPLE}, else "
                f"NCHW (now {now})")

    def _lay_out(self, model: nn.Module) -> nn.Module:
        """The memory layout for this size of the model (`_channels_last_for`), and the inputs to match."""
        self.layout_channels_last = self._channels_last_for(model)
        for loader in self.loaders.all:
            loader.normalize.channels_last = self.layout_channels_last
        return model.to(memory_format=torch.channels_last if self.layout_channels_last else torch.contiguous_format)

    @property
    def capture_seconds(self) -> float:
        """All CUDA-graph capture time of this run so far (part of train_seconds)."""
        return self._capture_seconds_done + self.runner.capture_seconds

    def apply_change(self, change: Change) -> dict:
        """Switch to `change.model`: carry momentum along `change.param_map`, keep the schedule
        position, drop the old CUDA graph (the next step captures a new one). Returns what each
        new parameter's state came from. Its time is booked as training time."""
        if growable_spec(change.model) is None:
            raise ResgrowError(f"a size change must hand over a resgrow ResNet or ViT, not "
                               f"{type(change.model).__name__}")
        t0 = time.perf_counter()
        if change.batch_size is not None and change.batch_size != self.loader.batch_size:
            self.loader.resize(change.batch_size)  # the new runner below captures with the new buffers
        carried = self._install(change.model, (self.model, self.optimizer), change.param_map)
        self.ranks.broadcast_([self.model, *self.method_modules().values()])  # new units drawn at random included
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
                          shared_value=lambda x: self.ranks.rank0_value(x, self.device), device_lock=self.lock)

    def _change_of(self, ctx: RunContext, change: Change | None) -> Change | None:
        """What a hook asks for: its Change, or the current model installed again (`ctx.reinstall`)."""
        if change is None and ctx.reinstalled is not None:
            return Change(self.model, {n: n for n, _ in self.model.named_parameters()}, ctx.reinstalled)
        return change

    def _optimizer_factory(self, params, lr: float) -> torch.optim.Optimizer:
        """The run's optimizer with its settings, for modules a method trains itself."""
        if self.cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, betas=tuple(self.cfg.betas), weight_decay=self.cfg.weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay,
                               nesterov=self.cfg.nesterov)

    def _set_lr_scales(self, values: dict) -> None:
        rest = self.slices.update(values)
        if rest:
            self.groups.update({k: values[k] for k in rest})

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        from ..methods import method_ref  # the registry imports every method, some of which import the trainer's parts

        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "epoch": self.epoch, "global_step": self.global_step, "train_seconds": self.train_seconds,
            "spec": _dict(arch_of(self.model)), "requested_spec": _dict(self.requested_spec),
            "model_class": self.model_class,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            **self._optimizer_state(),
            "schedule": self.schedule.state_dict(), "lr_scales": dict(self.groups.scales),
            "slice_scales": dict(self.slices.scales), "batch_size": self.loader.batch_size,
            "modules": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()}
                        for k, m in self.method_modules().items()},
            "method": {"name": self.method.name, "ref": method_ref(self.method), "state": self.method.state_dict()},
            "config": self.cfg.to_dict(), "rng": rng, "run_info": self.run_info,
            "data_cfg": self.data_cfg(), "world_size": self.ranks.world, "bf16": self.amp,
            "channels_last": self.channels_last,
        }

    def data_cfg(self) -> dict:
        """How the model's inputs are prepared, stored so that the trained model can be used alone."""
        h, w, c = self.data.image_shape
        return {"mean": list(self.mean), "std": list(self.std), "input_size": [c, h, w],
                "classes": list(self.data.classes)}

    def load_state_dict(self, checkpoint: dict, source: str = "checkpoint") -> None:
        try:
            self._check_same_run(checkpoint, source)
            check_resume(self.cfg, self.method, checkpoint, source)
            if checkpoint["spec"] is None:  # a model of the user's own: load into the one given
                self._load_model_state(self.model, checkpoint)
                return
            spec, requested = spec_from_dict(checkpoint["spec"]), spec_from_dict(checkpoint["requested_spec"])
            if requested != self.requested_spec:
                raise ResgrowError(f"{source} was trained for {checkpoint['run_info'].get('arch', 'another arch')} "
                                   f"({requested.block}, blocks {requested.blocks_str()}, widths "
                                   f"{requested.widths_str()}), not the requested {self.requested_spec.block}, blocks "
                                   f"{self.requested_spec.blocks_str()}, widths {self.requested_spec.widths_str()}")
            self._load_model_state(model_for(spec), checkpoint)
        except ResgrowError:
            raise
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise ResgrowError(f"{source} does not match the model or is incomplete ({first_line(e)})") from None

    def _check_same_run(self, checkpoint: dict, source: str) -> None:
        """The checkpoint is of this kind of model, method and process count, on the same data: same classes, image
        size and pixel statistics (a file replaced under the same path would otherwise go unnoticed)."""
        own = checkpoint["spec"] is None
        if own != (self.requested_spec is None) or checkpoint["model_class"] != self.model_class:
            raise ResgrowError(f"{source} holds a {checkpoint['model_class']}, not the given {self.model_class}")
        stored, now = checkpoint["data_cfg"], self.data_cfg()
        for key, what in (("classes", "classes"), ("input_size", "image size (C, H, W)")):
            if list(stored[key]) != now[key]:
                raise ResgrowError(f"{source} was trained on data with {what} {stored[key]}, this data has {now[key]}")
        if any(abs(a - b) > 1e-6 for a, b in zip(stored["mean"] + stored["std"], now["mean"] + now["std"])):
            raise ResgrowError(f"{source} was trained on other images: the training set's pixel mean/std differ "
                               f"({[round(x, 4) for x in stored['mean']]} then, {[round(x, 4) for x in now['mean']]} "
                               "now)")
        if checkpoint["world_size"] != self.ranks.world:
            n = checkpoint["world_size"]
            raise ResgrowError(f"{source} was trained by {n} process{'es' * (n > 1)}, and its batches are sharded so: "
                               f"resume it with {n} (torchrun --nproc_per_node {n}), not {self.ranks.world}")
        if checkpoint["method"]["name"] != self.method.name:
            raise ResgrowError(f"{source} was trained with method {checkpoint['method']['name']!r}, not "
                               f"{self.method.name!r}")

    def _optimizer_state(self) -> dict:
        """SGD's momentum as every checkpoint keeps it; another optimizer's whole state per parameter."""
        if self.cfg.optimizer == "sgd":
            return {"momentum": [self.optimizer.state[p]["momentum_buffer"].detach().cpu()
                                 for p in self.model.parameters()]}
        return {"optimizer_state": state_tensors(self.optimizer, self.model)}

    def _load_model_state(self, model: nn.Module, checkpoint: dict) -> None:
        self.method.load_state_dict(checkpoint["method"]["state"])  # before the install: its groups may depend on it
        if isinstance(self.method, OwnModules):
            model = self.method.attach(model)  # modules a method's phase trains with the model
        model.load_state_dict(checkpoint["model"])
        for name, module in self.method_modules().items():
            module.load_state_dict(checkpoint["modules"][name])
        self._place_modules()
        self.groups.scales, self.slices.scales = dict(checkpoint["lr_scales"]), dict(checkpoint["slice_scales"])
        if checkpoint["batch_size"] != self.loader.batch_size:
            self.loader.resize(checkpoint["batch_size"])
        self.amp = checkpoint["bf16"]  # "auto" chose on the machine the run started on: the run keeps it
        self._install(model)
        if "optimizer_state" in checkpoint:
            load_state_tensors(self.optimizer, self.model, checkpoint["optimizer_state"])
        else:  # SGD's: its momentum alone, as every checkpoint before AdamW kept it
            load_state_tensors(self.optimizer, self.model, [{"momentum_buffer": m} for m in checkpoint["momentum"]])
        self.schedule.load_state_dict(checkpoint["schedule"])
        self.epoch, self.global_step = checkpoint["epoch"], checkpoint["global_step"]
        self.train_seconds = checkpoint["train_seconds"]
        self.checkpoint_epoch = self.epoch
        torch.set_rng_state(checkpoint["rng"]["cpu"])
        cuda_rng = checkpoint["rng"].get("cuda")  # saved where CUDA was at hand; restored where as many devices are
        if cuda_rng is not None and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
            with self.lock:  # process-wide generator state: not while another run trained together captures
                torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])

    def _save(self) -> None:
        if self.out is not None:
            self.run_dir.save(self.state_dict())
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
        if self.run_dir is not None:
            self.run_dir.open()  # the lock: a second process on the directory stops here
        try:
            fresh = self.epoch == 0 and self.global_step == 0
            if self.run_dir is not None and (self.resume or fresh):
                self.run_dir.check(self.resume)  # again, now under the lock: decisive
            if self.resume:
                self._resume()
            elif fresh:
                self._start()
            self._stop_at = self.cfg.epochs if until is None else min(until, self.cfg.epochs)  # always checkpointed
            while self.epoch < self._stop_at and not self.stop_requested:
                self._train_epoch()
            return self.history
        finally:
            if self.run_dir is not None:
                self.run_dir.close()

    def _resume(self) -> None:
        checkpoint, path = self.run_dir.load(self.say)
        self.load_state_dict(checkpoint, f"checkpoint {path}")
        self.run_dir.truncate(self.epoch)
        self.history = [r for r in self.run_dir.rows() if r["epoch"] <= self.epoch]
        self.resume = False
        self.say(f"resumed {self.out} at epoch {self.epoch}/{self.cfg.epochs} ({self.train_seconds:.1f}s trained)")
        before = self.run_dir.note_machine(self._machine(), self.epoch)
        if before is not None:
            self.say(f"resumed on another machine than epochs {before['from_epoch'] + 1}-{self.epoch} trained on "
                     f"({machine_text(before)}): the run's training seconds mix both speeds (run.json: machines)")
        if self.run_info.get("shared_device"):  # resumed in `together` (train/together.py): run.json says so
            self.run_dir.update_info(shared_device=self.run_info["shared_device"])

    def _start(self) -> None:
        """A fresh run: the method's start (its first model, restarts), then run.json. Before run.json: a method that
        rejects its options leaves no file behind, and run.json records the options it resolved."""
        if self.run_dir is not None and self.run_dir.never_trained():
            self.say(f"{self.out} holds a run that stopped before its first epoch ended: starting it again")
        self.ranks.same_rng(self.device)
        ctx = self._ctx()
        change = self._change_of(ctx, self.method.on_run_start(ctx))
        self._place_modules()
        if change is not None:
            self.apply_change(change)
        self.ranks.broadcast_([self.model, *self.method_modules().values()])  # one start on every rank
        if self.run_dir is not None:
            self.run_dir.write_info(self._run_info())

    def _train_epoch(self) -> None:
        seconds, captures, train_loss, train_acc = self._run_steps()
        self.train_seconds += seconds
        self.epoch += 1
        row = self._epoch_row(seconds, captures, train_loss, train_acc)
        if not math.isfinite(train_loss):
            self._diverged(row, train_loss)
        if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs:
            t_eval = time.perf_counter()
            row.update(self.evaluator(self.model, self.amp))
            row["eval_seconds"] = round(time.perf_counter() - t_eval, 3)  # not training time; logged to plan runs
        row.update(self._size)
        self._method_epoch_end(row)
        row["train_seconds"] = round(self.train_seconds, 3)  # with the method's time and the size change
        row["events"], self._pending_events = self._pending_events, []
        self._write_row(row)
        if self.epoch % self.cfg.checkpoint_every == 0 or self.epoch == self._stop_at or self.stop_requested:
            self._save()

    def _run_steps(self) -> tuple[float, float, float, float]:
        """One epoch's steps (and the method's on_step hooks). Returns its seconds, the capture seconds in them, and
        the epoch's train loss and accuracy."""
        cfg, steps, e = self.cfg, self.loader.steps, self.epoch
        self.loader.start_epoch(e)
        self.runner.reset_metrics()
        prev = f" loss {self.history[-1]['train_loss']:.3f}" if self.history else ""
        factor = self.loader.batch_size / cfg.batch_size  # a method's batch size brings its lr along
        bar = Progress(steps, self.loader.batch_size, f"epoch {e + 1}/{cfg.epochs} lr {self.schedule(e):.3g} "
                       f"{self._size.get('blocks', self.model_class)}{prev}",
                       enabled=self.bars and not cfg.quiet and self.ranks.main)
        captures_before, own_step = self.capture_seconds, isinstance(self.method, OwnStep)
        self._sync()
        t0 = time.perf_counter()
        for i in range(steps):
            self._lr_now = lr = self.schedule(e + i / steps) * factor
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
                t0 += self._on_step()  # apply_change books its own time
        train_loss, train_acc = self.runner.read_metrics(steps)  # the epoch's one host sync, inside its clock
        for module in (self.model, *self.method_modules().values()):  # MG/OPT's coarse levels have statistics too
            self.ranks.average_buffers(module)
        seconds = time.perf_counter() - t0
        bar.close()
        return seconds, self.capture_seconds - captures_before, train_loss, train_acc

    def _on_step(self) -> float:
        """The method's on_step hook and the change it asks for; returns the change's seconds."""
        self.ranks.same_rng(self.device)
        ctx = self._ctx()
        change = self._change_of(ctx, self.method.on_step(ctx))
        if change is None:
            return 0.0
        if change.batch_size is not None:
            raise ResgrowError("a method changes the batch size at an epoch's end (on_epoch_end), not in on_step")
        t_change = time.perf_counter()
        self.apply_change(change)
        return time.perf_counter() - t_change

    def _epoch_row(self, seconds: float, captures: float, train_loss: float, train_acc: float) -> dict:
        row = {"epoch": self.epoch, "train_seconds": round(self.train_seconds, 3), "epoch_seconds": round(seconds, 3),
               "capture_seconds": round(captures, 3), "train_loss": train_loss, "train_acc": train_acc,
               "lr": self._lr_now,
               "img_per_s": round(self.loader.steps * self.loader.batch_size * self.ranks.world / seconds, 1),
               "batch_size": self.loader.batch_size}
        if self.data.streamed:  # how much of the epoch the step waited for the workers: is the run input-bound?
            row["data_wait_seconds"] = round(self.loader.wait_seconds, 3)
        return row

    def _diverged(self, row: dict, train_loss: float) -> None:
        row["events"] = self._pending_events + [event("diverged", "diverged")]
        self._write_row(row)
        last = self.checkpoint_epoch  # with --checkpoint-every k, not always the epoch before
        where = (f"last good checkpoint {self.out / CHECKPOINT} (epoch {last})" if self.out and last > 0
                 else "no checkpoint was written before it")
        raise DivergedError(f"training loss became {train_loss} in epoch {self.epoch}; stopped; {where}. "
                            "Try a lower --lr or a warm-up.")

    def _method_epoch_end(self, row: dict) -> None:
        """The epoch's work, the method's on_epoch_end hook (its time is training time) and the change it asks for."""
        steps = self.loader.steps
        # The epoch's work in gradients of the requested net: one of the current net's a step, and what the method
        # adds (a method with a step of its own counts all of its work)
        work = 0.0 if isinstance(self.method, OwnStep) else steps * self._size["flops"] / self._reference_flops
        row["steps"], row["grad_equivalents"] = steps, round(work, 3)
        t0 = time.perf_counter()
        self.ranks.same_rng(self.device)
        ctx = self._ctx(row)
        change = self._change_of(ctx, self.method.on_epoch_end(ctx))
        row["grad_equivalents"] = round(work + ctx.work, 3)
        self.ranks.check_agree(f"the change after epoch {self.epoch}", _change_text(change))
        # every rank stops after the same epoch
        self.stop_requested = self.ranks.true_on_any(self.stop_requested, self.device)
        self._sync()
        row["method_seconds"] = round(time.perf_counter() - t0, 4)  # a method's decisions cost training time
        self.train_seconds += row["method_seconds"]
        if change is not None and self.epoch < self.cfg.epochs:
            self.apply_change(change)
            row.update({f"after_{k}": v for k, v in self._size.items()})

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
        if self.run_dir is not None:
            self.run_dir.append(row)
        if not self.cfg.quiet:
            self.say(format_row(row, self.cfg.epochs, self.method.progress(row)))

    def _run_info(self) -> dict:
        """run.json: how the run was asked for, and where and how it trains."""
        import platform

        fast_path = {"amp_bf16": self.amp, "channels_last": self.channels_last, "layout": self.layout_note,
                     "cuda_graphs": self.use_graphs, "bf16_weights": self.runner.bf16_copies is not None,
                     "compile": self.cfg.compile}
        return dict(self.run_info, config=self.cfg.to_dict(), spec=_dict(self.requested_spec),
                    model_class=self.model_class,
                    method=self.method.describe(), reference_flops=self._reference_flops, world_size=self.ranks.world,
                    global_batch_size=self.cfg.batch_size * self.ranks.world,
                    report_columns=[dataclasses.asdict(c) for c in self.method.report_columns],
                    dataset=self.data.summary(), device=str(self.device), python=platform.python_version(),
                    **self._machine(), precision=precision_note(self.amp, self.device), fast_path=fast_path)

    def _machine(self) -> dict:
        """Where this process trains, for its clock (run.json; its history when resumed elsewhere)."""
        return dict(gpu=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
                    cpu=cpu_name() if self.device.type == "cpu" else None, threads=torch.get_num_threads(),
                    torch=torch.__version__)

    def _sync(self) -> None:
        """Wait for this run's GPU work, for the clock: its stream, not the device, so that runs trained
        together (train/together.py) do not wait for each other."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def say(self, msg: str) -> None:
        """One line on stderr, from the main process, prefixed by the run's label (runs trained together)."""
        if self.ranks.main:
            print(self.label + msg, file=sys.stderr, flush=True)


def format_row(r: dict, epochs: int, method_says: str = "") -> str:
    test = f"  test {r['test_acc']:.2%}" if "test_acc" in r else ""
    val = f"  val {r['val_acc']:.2%}" if "val_acc" in r else ""
    said = f"  {method_says}" if method_says else ""
    events = f"  [{'; '.join(map(event_text, r['events']))}]" if r.get("events") else ""
    return (f"epoch {r['epoch']:>4}/{epochs}  lr {r['lr']:.4g}  loss {r['train_loss']:.4f}  acc "
            f"{r['train_acc']:.2%}{test}{val}  {r['img_per_s']:,.0f} img/s{_wait_str(r)}  {r['train_seconds']:.1f}s  "
            f"{_size_str(r)}  {r.get('params', 0) / 1e6:.2f}M{said}{events}")


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
    size = spec.blocks_str() + " x " + spec.widths_str() if spec else type(change.model).__name__
    return f"{size}, batch {change.batch_size}"


def _dict(spec: Spec | None) -> dict | None:
    return spec.to_dict() if spec is not None else None
