"""The interface between a growth method and the trainer.

A method decides *when* and *how* the model changes. The trainer calls its hooks; a hook may
return a `Change` (a new model plus a map from its parameters to the old ones). The trainer then
carries the optimizer state along that map, keeps the schedule position, re-captures the CUDA
graph and re-wraps DDP. A method never touches the optimizer, the graph or the wrapper itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from ..train.optim import ParamMap
    from ..train.trainer import RunContext


@dataclass
class Change:
    model: nn.Module
    param_map: "ParamMap"
    event: str  # e.g. "grew 3-3-3 -> 6-6-6 (score 1.43)"; goes into the log and the progress output


class Method:
    """Base class: every hook does nothing, so the model never changes (the fixed-size baseline)."""

    name = "baseline"
    options: tuple = ()  # keyword options the CLI may pass (e.g. "start_blocks")
    resizes = False  # True: hands the trainer new models, so it needs a resgrow ResNet to start from
    log_columns: tuple = ()  # per-epoch numbers the method adds to ctx.row that also go into metrics.csv / TensorBoard
    step_interval = 0  # > 0: on_step is called every that many steps (costs a graph break when it returns a Change)

    def check(self, spec, epochs: int, schedule: str) -> None:
        """Raise ResgrowError if the method cannot train the final architecture `spec` for `epochs`
        epochs with this schedule kind. Needs no data or model, so the CLI calls it before loading data."""

    def on_run_start(self, ctx: "RunContext") -> Change | None:
        """Called once before the first epoch of a fresh run (not on resume). May set schedule restarts."""
        return None

    def on_epoch_end(self, ctx: "RunContext") -> Change | None:
        """Called after each epoch's training and evaluation. ctx.row holds that epoch's metrics; a
        method may add fields to it (they go into metrics.jsonl). Its time counts as training time."""
        return None

    def on_step(self, ctx: "RunContext") -> Change | None:
        return None

    def progress(self, row: dict) -> str:
        """A few words for the epoch's progress line, from the fields it added to `row` (e.g. how near
        its next growth is); "" for none."""
        return ""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def settings(self) -> dict:
        """Its options (the names in `options`) as it trains with them; after `load_state_dict`, the
        values the run was started with. `resgrow train --resume` refuses an option that differs."""
        return {}

    def describe(self) -> str:
        return self.name

    @classmethod
    def card(cls) -> str:
        """The method card (paper, what it does, defaults, options, when it helps): the class's
        docstring if it is one, else its module's."""
        import inspect
        import sys

        for doc in (cls.__doc__, sys.modules[cls.__module__].__doc__):
            if doc and doc.lstrip().startswith("Method card"):
                return inspect.cleandoc(doc)
        return inspect.cleandoc(cls.__doc__ or f"{cls.name}: no method card")


class Baseline(Method):
    """Method card: the fixed-size reference. Trains `--arch` as given with the chosen schedule;
    every growth method's speed and accuracy are reported as ratios against it."""

    name = "baseline"
