"""The trainer and what it is built from: schedules, SGD state carrying, the (captured) step, checkpoints."""

from ..methods.base import ParamMap, RunContext
from .checkpoint import load_checkpoint, save_checkpoint
from .device import resolve_device
from .evaluation import evaluate
from .optim import carry_state, make_optimizer, make_sgd
from .saved import evaluate_model, evaluate_run, load_model
from .schedules import SCHEDULES, Schedule
from .step import StepRunner
from .together import fit_together
from .trainer import CHECKPOINT, TrainConfig, Trainer

__all__ = ["Trainer", "TrainConfig", "RunContext", "Schedule", "SCHEDULES", "StepRunner", "evaluate",
           "make_sgd", "make_optimizer", "carry_state", "ParamMap", "save_checkpoint", "load_checkpoint", "load_model",
           "evaluate_model", "evaluate_run", "fit_together", "CHECKPOINT", "resolve_device"]
