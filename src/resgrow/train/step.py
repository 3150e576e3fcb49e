"""One training step (batch gather + augmentation + forward + backward + SGD), eager or as a CUDA graph.

Small CIFAR ResNets are bound by kernel-launch overhead, so on CUDA the whole step is captured
once with torch.cuda.graph and replayed: the loader's epoch buffers, the lr tensor and the
metric accumulators are static device tensors that the graph reads and writes in place.
Loss and accuracy are summed on the device and read once per epoch: no host sync per step.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import DeviceLoader
from ..errors import ResgrowError, first_line
from .bf16_weights import Bf16Weights


class StepRunner:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DeviceLoader, *,
                 amp: bool = False, graph: bool = False, label_smoothing: float = 0.0, bf16_weights: bool = False,
                 fold_h: bool = True, objective=None, before_step=None, after_step=None, ranks=None, lock=None):
        from .distributed import Ranks

        self.model, self.optimizer, self.loader = model, optimizer, loader
        self.ranks = ranks or Ranks()  # several processes: gradients averaged inside the step, metrics summed
        self.amp, self.use_graph, self.label_smoothing = amp, graph, label_smoothing
        # objective(model, x, y) -> (loss, logits): a method's own loss instead of cross-entropy on the logits;
        # before_step(): work the step does right before SGD (each parameter group's lr from its scale)
        # after_step(): work right after it (per-element update scales)
        self.objective, self.before_step, self.after_step = objective, before_step, after_step
        # shared by runs trained together: one capture at a time
        self.lock = lock if lock is not None else nullcontext()
        # Only meaningful under autocast: it replaces autocast's per-layer weight casts (and folds h).
        self.bf16_copies = Bf16Weights(model, fold_h) if (bf16_weights and amp) else None
        dev = loader.device
        self.loss_sum = torch.zeros((), device=dev)
        self.correct = torch.zeros((), dtype=torch.int64, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_seconds = 0.0

    def autocast(self):
        """bf16 autocast where the run trains in it, else nothing."""
        if not self.amp:
            return nullcontext()
        # cache_enabled=False: a cached bf16 weight copy would outlive the capture and go stale.
        return torch.autocast(self.loader.device.type, dtype=torch.bfloat16, cache_enabled=False)

    def _step(self) -> None:
        x, y = self.loader.next_batch()
        with self.autocast():
            if self.objective is not None:
                loss, out = self.objective(self.model, x, y)
            elif self.bf16_copies is None:
                out = self.model(x)
            else:
                out, leaves = self.bf16_copies.forward(x)
            if self.objective is None:
                loss = F.cross_entropy(out, y, label_smoothing=self.label_smoothing)
        if self.bf16_copies is None:
            loss.backward()
        else:
            self.bf16_copies.backward(loss, leaves)
        self.ranks.mean_grads(self.model.parameters())
        if self.before_step is not None:
            self.before_step()
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step()
        if self.graph is None and not self._capturing:
            self.optimizer.zero_grad(set_to_none=True)
        self.record(loss, out, y)

    _capturing = False

    def run(self) -> None:
        self.loader.stage()  # streamed data: the next batch into the buffers the step reads
        if not self.use_graph:
            self._step()
            return
        if self.graph is None:
            self.capture()
        self.graph.replay()

    def capture(self) -> None:
        """Warm up on a side stream, undo the warm-up's effects, then capture one step."""
        try:
            self._capture()
        except RuntimeError as e:  # e.g. an older torch whose fused SGD cannot take a tensor lr
            raise ResgrowError(f"CUDA graph capture of the training step failed ({first_line(e)}); "
                               "rerun with --no-graphs (TrainConfig(graphs=False))") from None

    def _capture(self) -> None:
        with self.lock:  # runs trained together capture one at a time (train/together.py)
            self._capture_locked()

    def _capture_locked(self) -> None:
        t0 = time.perf_counter()
        state = self._state_tensors()
        saved = [t.clone() for t in state]
        self.loader.step.zero_()  # warm-up steps must index inside the epoch's buffers
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        self._capturing = True
        try:
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._step()
            torch.cuda.current_stream().wait_stream(side)
            with torch.no_grad():
                for t, s in zip(state, saved):
                    t.copy_(s)
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            # thread_local: another run's thread may sync or allocate meanwhile (global mode would call that an error)
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._step()
        finally:
            self._capturing = False
        torch.cuda.synchronize()
        self.graph = graph
        self.capture_seconds += time.perf_counter() - t0

    def _state_tensors(self) -> list[torch.Tensor]:
        """Everything a step mutates: weights, BN statistics, the optimizer's state, loader position, metrics."""
        out = [p.data for p in self.model.parameters()] + list(self.model.buffers())
        out += [t for s in self.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        return out + [self.loader.step, self.loss_sum, self.correct]

    def record(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        """Count a step's loss and correct predictions into the epoch's metrics (on the device, no sync)."""
        self.loss_sum += loss.detach().float()
        self.correct += (out.argmax(1) == y).sum()

    def reset_metrics(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    def read_metrics(self, steps: int) -> tuple[float, float]:
        """Mean loss and accuracy over `steps` steps; the one host sync of an epoch."""
        loss, correct = self.ranks.sum_(torch.stack([self.loss_sum.double(), self.correct.double()])).tolist()
        steps *= self.ranks.world
        return loss / max(steps, 1), correct / max(steps * self.loader.batch_size, 1)


class MethodStep:
    """What a method with a step of its own (`OwnStep.train_step`) works with, one step at a time:

    - `model` and its `optimizer`, whose lr the trainer has set for this step (`lr`, the parameter groups' scales
      applied); `epoch` (epochs completed) and `epochs` (the run's);
    - `next_batch()`: the step's (x, y); `autocast()`: the run's precision for its forward passes;
    - `record(loss, logits, y)`: the epoch's train loss and accuracy (one step: one record);
    - `new_optimizer(params, lr_scale=1)`: SGD with the run's momentum, weight decay and Nesterov flag at this
      step's lr times the scale, for modules it trains itself (`set_lr(optimizer)` brings each of its groups to a
      later step's lr times its scale);
    - `ranks`: several processes, over which it averages its own gradients and values."""

    def __init__(self, runner: StepRunner, lr: float, epoch: int = 0, epochs: int = 0, optimizer_factory=None):
        self.model, self.optimizer, self.lr, self.epoch, self.epochs = runner.model, runner.optimizer, lr, epoch, epochs
        self.autocast, self.record = runner.autocast, runner.record
        self.ranks = runner.ranks
        self.device = runner.loader.device
        self._loader, self._factory = runner.loader, optimizer_factory or _plain_sgd

    def next_batch(self):
        self._loader.stage()
        return self._loader.next_batch()

    def new_optimizer(self, params, lr_scale: float = 1.0) -> torch.optim.Optimizer:
        """SGD as the run's, at this step's lr times `lr_scale` (timm's convention, kept in its group)."""
        opt = self._factory(params, self.lr * lr_scale)
        for group in opt.param_groups:
            group["lr_scale"] = lr_scale
        return opt

    def set_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """Each group of `optimizer` at this step's lr times its `lr_scale`."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_scale", 1.0)


def _plain_sgd(params, lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr)
