"""What the depth-growth methods share: the start model, the number of doublings, one grow."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import COSINES
from ..errors import ResgrowError
from ..events import GROW, event
from ..grow.depth import deepen
from ..models.family import model_for
from ..models.spec import dashed
from .base import Change, Method, MethodOptions, option


def epochs_str(epochs) -> str:
    """[60, 110] -> "epochs 60, 110"; [3] -> "epoch 3": how the start events name growth epochs."""
    epochs = list(epochs)
    return ("epoch " if len(epochs) == 1 else "epochs ") + ", ".join(map(str, epochs))


def parse_blocks(text: str | tuple) -> tuple[int, ...]:
    if isinstance(text, (tuple, list)):
        return tuple(int(b) for b in text)
    try:
        blocks = tuple(int(b) for b in str(text).replace(",", "-").split("-"))
    except ValueError:
        raise ResgrowError(f"blocks per stage must look like 3-3-3, not {text!r}") from None
    if not blocks or min(blocks) < 1:
        raise ResgrowError(f"blocks per stage must be positive, not {text!r}")
    return blocks


PARTIAL_HINT = "or give --partial-growth"


def fixed_epochs(epochs: int, k: int, grow_at=None) -> list[int]:
    """The epochs of k growths at fixed epochs: `grow_at` (checked), or multilevel's rule: the paper's 60 and 110
    of 160 scaled, i.e. the first growth at 37.5% of the run and the others evenly spaced after it."""
    if grow_at is None:
        first = 0.375  # 60 of 160 epochs
        at = [round(epochs * (first + (1 - first) * j / k)) for j in range(k)]
        if len(set(at)) != k or not all(0 < e < epochs for e in at):
            raise ResgrowError(f"{epochs} epochs are too few for {k} growths at distinct epochs; "
                               "train longer or give --grow-at")
        return at
    if len(set(grow_at)) != len(grow_at) or not all(0 < e < epochs for e in grow_at):
        raise ResgrowError(f"growth epochs {list(grow_at)} must be distinct and inside (0, {epochs})")
    return list(grow_at)


def doublings(start: tuple[int, ...], final: tuple[int, ...]) -> int:
    """k such that final = start * 2^k in every stage."""
    _same_stages(start, final)
    for k in range(0, 12):
        if all(s * 2**k == f for s, f in zip(start, final)):
            return k
    starts = reachable_starts(final)
    hint = (f"--start-blocks can be {' or '.join(map(dashed, starts))}, {PARTIAL_HINT}" if starts else
            "no start reaches it (it has an odd number of blocks in a stage): pick an arch with even blocks per "
            f"stage (resnet38, resnet74, resnet146, ...) {PARTIAL_HINT}")
    raise ResgrowError(f"cannot reach {dashed(final)} from {dashed(start)} by doubling every stage; {hint}")


def _same_stages(start: tuple[int, ...], final: tuple[int, ...]) -> None:
    if len(start) != len(final):
        raise ResgrowError(f"start blocks {dashed(start)} and final blocks {dashed(final)} "
                           "have different numbers of stages")


def growth_path(start: tuple[int, ...], final: tuple[int, ...], partial: bool = False) -> list[tuple[int, ...]]:
    """The blocks per stage after each growth, from `start` (excluded) to `final`: every stage doubles,
    and with `partial` is capped at its final blocks (1-1-2-1 -> 2-2-4-2 -> 3-4-6-3)."""
    if not partial:
        return [tuple(s * 2**j for s in start) for j in range(1, doublings(start, final) + 1)]
    _same_stages(start, final)
    if any(s > f for s, f in zip(start, final)):
        raise ResgrowError(f"start blocks {dashed(start)} exceed the final blocks {dashed(final)} in a stage")
    path, now = [], start
    while now != final:
        now = next_blocks(now, final)
        path.append(now)
    return path


def next_blocks(now: tuple[int, ...], final: tuple[int, ...]) -> tuple[int, ...]:
    """The blocks after one growth: every stage doubles, capped at its final blocks (the cap bites only with
    partial growth: a doubling path reaches `final` exactly)."""
    return tuple(min(2 * n, f) for n, f in zip(now, final))


def reachable_starts(final: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every start that doubles up to `final`, deepest first: 12-12-12 -> [6-6-6, 3-3-3]."""
    out, k = [], 1
    while all(f % 2**k == 0 for f in final):
        out.append(tuple(f // 2**k for f in final))
        k += 1
    return out


def default_start(final: tuple[int, ...], partial: bool = False) -> tuple[int, ...]:
    """Two doublings when the final depth allows it (12-12-12 -> 3-3-3), else one; with `partial`, the
    final blocks / 4 rounded up where no doubling reaches them (3-4-6-3 -> 1-1-2-1)."""
    starts = reachable_starts(final)
    if starts:
        return starts[min(1, len(starts) - 1)]
    if partial:
        return tuple(-(-f // 4) for f in final)
    raise ResgrowError(f"final blocks {dashed(final)} cannot be reached by doubling; pick an arch with "
                       "even blocks per stage (resnet38, resnet74, resnet146, ...), give --start-blocks, "
                       f"{PARTIAL_HINT}")


# Declared by each depth method after its own options, as the last of them (the order of their flags and cards)
PARTIAL_GROWTH = option(False, "let a growth add fewer blocks than double: every stage doubles, capped at its final "
                        "blocks, so depths no doubling reaches can be grown (ResNet-50's 3-4-6-3 from 1-1-2-1, 9-9-9 "
                        "from 3-3-3); the default start becomes the final blocks / 4, rounded up; off: every growth "
                        "doubles every stage, as the papers do")


# Declared by each method that restarts the lr at a growth, before PARTIAL_GROWTH
LR_RESTARTS = option(True, "restart the cosine lr at every growth that deepens, as the papers do; off: the run's "
                     "schedule goes on through the growths unchanged (a restart baseline shows what the restarts "
                     "cost)")


def restarts_checked(lr_restarts: bool, schedule: str, name: str) -> None:
    """Refuse a schedule the method cannot restart: any schedule goes when it does not restart it."""
    if lr_restarts and schedule not in COSINES:
        raise ResgrowError(f"method {name} restarts a cosine schedule at every growth that deepens; use --schedule "
                           "cosine, or --no-lr-restarts to keep the schedule as it is")


def restarts_str(lr_restarts: bool) -> str:
    """What a method's description adds when the lr is not restarted."""
    return "" if lr_restarts else ", no lr restarts"


def no_restarts_said(event: dict, lr_restarts: bool) -> None:
    """The start event says when the lr is not restarted: `compare` shows the run's lr from it."""
    if not lr_restarts:
        event["text"] += "; the lr is not restarted at growths"
        event["lr_restarts"] = False


@dataclass(frozen=True)
class DepthOptions(MethodOptions):
    """What every depth-growth method takes: the start blocks here, `partial_growth` (PARTIAL_GROWTH) in each."""

    start_blocks: tuple | None = option(None, "blocks per stage to start from, e.g. 3-3-3", str,
                                        "the final blocks / 4, or / 2 where a stage's blocks do not divide by 4")
    lr_restarts = True  # each method's field (LR_RESTARTS) where it restarts the lr
    partial_growth = False  # the field is each method's (PARTIAL_GROWTH), declared after its own options

    def normalize(self):
        if self.start_blocks is not None:
            self.set("start_blocks", parse_blocks(self.start_blocks))


class DepthGrowth(Method):
    """Start with `start_blocks` per stage and double every stage `k` times up to the final arch."""

    mode = "interpolate"
    resizes = True
    Options = DepthOptions

    def __init__(self, options: DepthOptions | None = None, **given):
        super().__init__(options, **given)
        self.k = None  # growths, known at run start
        self.final_blocks = None  # the run's arch's blocks, known at run start
        self.grows: list[dict] = []

    def plan(self, final_blocks: tuple[int, ...], schedule: str) -> tuple[tuple[int, ...], int]:
        """(start blocks, growths) for this final depth; errors for what cannot be grown."""
        restarts_checked(self.opts.lr_restarts, schedule, self.name)
        partial = self.opts.partial_growth
        start = self.opts.start_blocks or default_start(final_blocks, partial)
        k = len(growth_path(start, final_blocks, partial))
        if k == 0:
            raise ResgrowError(f"start blocks equal the final blocks {dashed(final_blocks)}: nothing to grow")
        return start, k

    def prepare(self, spec, epochs, schedule):
        start, _ = self.plan(spec.blocks, schedule)
        self.fill(start_blocks=start)

    def on_run_start(self, ctx):
        final = ctx.model.spec
        self.prepare(final, ctx.epochs, ctx.schedule.kind)
        begin, self.k = self.plan(final.blocks, ctx.schedule.kind)
        start = model_for(final.replace(blocks=begin))
        self.final_blocks = final.blocks
        path = growth_path(begin, final.blocks, self.opts.partial_growth)
        how = f", partial growth: {' -> '.join(map(dashed, path))}" if self.opts.partial_growth else ""
        return Change(start.to(next(ctx.model.parameters()).device), {},
                      event("start", f"start {start.spec.blocks_str()} (final {final.blocks_str()}{how})",
                            blocks=start.spec.blocks_str(), final=final.blocks_str()))

    def grow(self, ctx, why: str) -> Change:
        old = ctx.model.spec.blocks_str()
        to = next_blocks(ctx.model.spec.blocks, self.final_blocks) if self.final_blocks else None
        new, pmap = deepen(ctx.model, self.mode, blocks=to)
        self.grows.append({"epoch": ctx.epoch, "train_seconds": round(ctx.train_seconds, 3), "from": old,
                           "to": new.spec.blocks_str(), "why": why})
        return Change(new, pmap, event(GROW, f"grew {old} -> {new.spec.blocks_str()} ({why})",
                                       **{"from": old, "to": new.spec.blocks_str(), "why": why}))

    def start_str(self) -> str:
        start = self.opts.start_blocks
        text = self.marked("start_blocks", dashed(start)) if start else "default"
        return text + (", partial growth" if self.opts.partial_growth else "")

    @property
    def grows_left(self) -> int:
        return (self.k or 0) - len(self.grows)

    def state_dict(self) -> dict:
        return dict(super().state_dict(), k=self.k, grows=self.grows,
                    final_blocks=list(self.final_blocks) if self.final_blocks else None)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.k, self.grows = state["k"], list(state["grows"])
        self.final_blocks = tuple(state["final_blocks"]) if state["final_blocks"] else None
