"""Compare run directories against the first one (the baseline), as BENCHMARKS.md's protocol asks.

Per run: final-epoch test accuracy and its difference to the baseline, training wall-clock and
its ratio, training FLOPs relative to the baseline (the sum over epochs of the FLOPs per image of
the model trained in that epoch: what growth saves in arithmetic), parameter-epochs relative to the
baseline (the same sum of parameter counts, the measure LipGrow's paper reports), time to accuracy (training
seconds until the test accuracy first reaches the baseline's final accuracy minus `gap` points),
growth events, the columns a method adds (LipGrow: its meter's cost), the steady epoch time at the final size (the
median epoch once the final net is captured): runs that end at the same net should match there, and a warning
says when they do not (different machines, whose speed every time ratio then carries), and the lr schedule. Never the
best epoch: only the last one and the first crossing of a target fixed by the baseline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from statistics import mean, median

from ..errors import ResgrowError
from ..events import as_event, event_text, is_growth
from ..models.spec import dashed
from ..options import Column
from ..train.device import machine_text
from .metrics import MetricsLog


@dataclass
class RunSummary:
    name: str
    epochs: int
    test_acc: float
    train_seconds: float
    flops: float  # sum over epochs of FLOPs per image
    log: list[dict]
    info: dict | None = None  # run.json, when the run has one
    clock: str = "s"  # the unit of train_seconds (and the log's): seconds, or EPOCH_CLOCK (on_epoch_clock)

    @property
    def shared(self) -> bool:
        """Trained together with other runs on one device (`resgrow together`): its clock counts theirs too."""
        return bool((self.info or {}).get("shared_device"))

    @property
    def growths(self) -> list[str]:
        return [f"{event_text(e)} @ep{r['epoch']}" for r in self.log for e in r.get("events", []) if is_growth(e)]

    @property
    def grow_rows(self) -> list[dict]:
        """The log rows of the epochs that ended with a growth."""
        return [r for r in self.log if any(is_growth(e) for e in r.get("events", []))]

    @property
    def param_epochs(self) -> float:
        """Sum over epochs of the parameters of the model trained in that epoch: LipGrow's cost measure."""
        return sum(r.get("params") or 0 for r in self.log)

    @property
    def columns(self) -> list[Column]:
        """The columns the run's method adds to the table (run.json's report_columns)."""
        return [Column(**c) for c in (self.info or {}).get("report_columns", [])]

    @property
    def final_size(self) -> str | None:
        last = self.log[-1]
        return f"{last['blocks']} x {last.get('widths', '?')}" if last.get("blocks") else None

    @cached_property
    def _steady_rows(self) -> list[dict]:
        """The log rows of the epochs at the final size after the run's last change (a growth, a method's phase: its
        event), without the first epoch after it (which captures the graph)."""
        size = lambda r: (r.get("blocks"), r.get("widths"))  # noqa: E731
        changed = [i for i, r in enumerate(self.log) if r.get("events")]
        after = self.log[changed[-1] + 1:] if changed else self.log
        return [r for prev, r in zip(after, after[1:])
                if size(r) == size(prev) == size(self.log[-1]) and r.get("epoch_seconds") is not None]

    @property
    def steady_epochs(self) -> list[float]:
        """Epoch times of `_steady_rows`."""
        return [r["epoch_seconds"] for r in self._steady_rows]

    @property
    def plain_epoch(self) -> float | None:
        """Median steady epoch whose steps were the fixed-size net's own (one gradient of the final net each, as the
        log's work says): the run's machine's time for one epoch of the final net trained plainly. None when there are
        fewer than STEADY_NEEDED such epochs, or the method's steps at the final size are its own (MG/OPT's cycles)."""
        plain = [r["epoch_seconds"] for r in self._plain_rows]
        return median(plain) if len(plain) >= STEADY_NEEDED else None

    @property
    def _plain_rows(self) -> list[dict]:
        return [r for r in self._steady_rows if r.get("steps")
                and abs(r.get("grad_equivalents", r["steps"]) - r["steps"]) <= 1e-3 * r["steps"]]

    @cached_property
    def plain_epoch_by_machine(self) -> dict[str | None, float]:
        """`plain_epoch` on each machine the run trained on, where it has STEADY_NEEDED plain epochs there."""
        on: dict[str | None, list[float]] = {}
        for r in self._plain_rows:
            on.setdefault(self.machine_at(r["epoch"]), []).append(r["epoch_seconds"])
        return {m: median(t) for m, t in on.items() if len(t) >= STEADY_NEEDED}

    @property
    def machine(self) -> str | None:
        """The GPU or CPU the run trained on (run.json)."""
        return machine_of(self.info or {})

    @property
    def machines(self) -> list[dict]:
        """Where the run trained, when it was resumed on another machine: run.json's history, one entry each."""
        return (self.info or {}).get("machines") or []

    def machine_at(self, epoch: int) -> str | None:
        """The machine that trained epoch `epoch` (1-based): the run's own, or the history's entry for that epoch."""
        return ([machine_of(m) for m in self.machines if m["from_epoch"] < epoch] or [self.machine])[-1]

    @property
    def steady_epoch(self) -> float | None:
        """Median of `steady_epochs`: a machine's speed on the final net, comparable across runs and machines."""
        return median(self.steady_epochs) if self.steady_epochs else None

    @property
    def lr_schedule(self) -> str:
        """The lr the run trained with, from run.json: schedule and restarts as given, and the restart a
        growth method makes at each growth (multilevel: cycles ending at the next one; lipgrow: resets) unless its
        start event says it made none (--no-lr-restarts).
        Restart baselines differ from the plain one only here, so a table shows it."""
        cfg = (self.info or {}).get("config") or {}
        if "schedule" not in cfg:
            return "-"
        restarts = ",".join(f"{x:g}" for x in cfg.get("restarts") or ())
        restarted = all(as_event(e).get("lr_restarts", True) for r in self.log[:1] for e in r.get("events", ()))
        growths = " + restart at each growth" if self.grow_rows and restarted else ""
        return cfg["schedule"] + (f" {restarts}" if restarts else "") + growths

    @property
    def stages(self) -> list[dict]:
        """Where the run's time went: one entry per size in the order trained (consecutive epochs of one blocks x
        widths), with its epochs, training seconds (each epoch's share of the clock, the size change at its end
        included) and FLOPs per image."""
        out, before = [], 0.0
        for r in self.log:
            size = f"{r.get('blocks', '?')} x {r.get('widths', '?')}"
            if not out or out[-1]["size"] != size:
                out.append({"size": size, "epochs": 0, "seconds": 0.0, "flops": r.get("flops") or 0})
            out[-1]["epochs"] += 1
            out[-1]["seconds"] += r["train_seconds"] - before
            before = r["train_seconds"]
        return out

    def time_to(self, target: float) -> tuple[float, int] | None:
        """(training seconds, epoch) when the test accuracy first reached `target`, or None."""
        for r in self.log:
            if r.get("test_acc") is not None and r["test_acc"] >= target:
                return r["train_seconds"], r["epoch"]
        return None


def _epoch_flops(row: dict, reference: float | None) -> float:
    """An epoch's FLOPs per image: its work in gradients of the requested net, per step, times that net's
    FLOPs (a method that does more than one pass a step, MG/OPT, logs its own work); older logs: the model's."""
    if reference and row.get("steps") and row.get("grad_equivalents") is not None:
        return reference * row["grad_equivalents"] / row["steps"]
    return row.get("flops") or 0


def load_run(path: str | Path) -> RunSummary:
    d = Path(path)
    metrics = MetricsLog(d)
    f = metrics.jsonl
    if not f.is_file():
        raise ResgrowError(f"{d} is not a run directory (no metrics.jsonl)")
    try:
        log = metrics.rows()
    except json.JSONDecodeError as e:
        raise ResgrowError(f"{f} is not valid JSON lines ({e})") from None
    if not log or "test_acc" not in log[-1]:
        raise ResgrowError(f"{f} has no evaluated final epoch yet (is the run finished?)")
    try:
        info = json.loads((d / "run.json").read_text())
    except (OSError, ValueError):
        info = None
    flops = sum(_epoch_flops(r, (info or {}).get("reference_flops")) for r in log)
    return RunSummary(d.name, log[-1]["epoch"], log[-1]["test_acc"], log[-1]["train_seconds"], flops, log, info)


def machine_of(info: dict) -> str | None:
    """The GPU or CPU a run's run.json names (the device where it names neither)."""
    return info.get("gpu") or info.get("cpu") or info.get("device")


# What must match for a ratio against the first run to mean what it says. The schedule and the
# method may differ (that is what is compared); a growth method's final arch is the run's --arch.
_SAME = [
    ("device", machine_of,
     "training seconds compare machines, not methods: --clock epochs times each run on its own machine"),
    ("torch", lambda i: i.get("torch"), "kernels and speed can change between versions"),
    ("data", lambda i: i.get("dataset"), "accuracies are not comparable"),
    ("final arch", lambda i: _arch(i.get("spec")) or i.get("model_class"), None),
    ("epochs", lambda i: i.get("config", {}).get("epochs"), None),
    ("batch size", lambda i: i.get("config", {}).get("batch_size"), None),
    ("peak lr", lambda i: i.get("config", {}).get("lr"), None),
    ("weight decay", lambda i: i.get("config", {}).get("weight_decay"), None),
    ("augmentation", lambda i: i.get("config", {}).get("augment"), None),
    ("label smoothing", lambda i: i.get("config", {}).get("label_smoothing"), None),
    ("fast path", lambda i: _fast(i.get("fast_path")), "speed ratios include the trainer's settings"),
]


def _arch(spec: dict | None) -> str | None:
    if not spec:
        return None
    return f"{spec.get('block')} {dashed(spec.get('blocks', []))} x {dashed(spec.get('widths', []))}"


def _fast(fp: dict | None) -> str | None:
    if not fp:
        return None
    return ", ".join(k for k, v in sorted(fp.items()) if v and v != "none") or "eager"


def protocol_warnings(runs: list[RunSummary], skip: tuple[str, ...] = ()) -> list[str]:
    """Where a run's setup differs from the first run's (device, data, arch, recipe, fast path):
    one line per difference, so that a table never silently compares unlike runs. `skip`: what may differ
    (a frontier's budgets differ in epochs; on the epoch clock, the device and the speed)."""
    out = [f"{r.name} has no run.json: its setup is not checked" for r in runs if r.info is None]
    out += [f"{r.name} is unfinished: it has trained {r.epochs} of its {planned} epochs, so its numbers are not final"
            for r in runs
            if r.info is not None and (planned := r.info.get("config", {}).get("epochs")) and r.epochs < planned]
    out += [f"{r.name} trained on {len(r.machines)} machines ("
            + "; ".join(f"{machine_text(m)} from epoch {m['from_epoch']}" for m in r.machines)
            + "): its time mixes their speeds" for r in runs if len(r.machines) > 1 and "device" not in skip]
    out += [f"{r.name} trained alongside {', '.join(Path(o).name for o in shared)} on one device (resgrow together): "
            "its training seconds count their time too; compare its accuracy, not its time"
            for r in runs if r.info is not None and (shared := r.info.get("shared_device"))]
    known = [r for r in runs if r.info is not None]
    for what, get, why in _SAME if len(known) >= 2 else ():
        if what in skip:
            continue
        values = {r.name: get(r.info) for r in known}
        if len({repr(v) for v in values.values()}) > 1:
            each = "; ".join(f"{name} {v}" for name, v in values.items())
            out.append(f"not the same {what}: {each}" + (f" ({why})" if why else ""))
    return out + ([] if "speed" in skip else speed_warnings(runs))


STEADY_TOLERANCE = 0.01  # above the run-to-run spread of one net's steady epoch on one machine (BENCHMARKS.md)
STEADY_NEEDED = 3  # steady epochs at the final size that the speed check needs


def speed_warnings(runs: list[RunSummary], tolerance: float = STEADY_TOLERANCE) -> list[str]:
    """Runs that end at the same net should train it at the same speed. When their steady epochs differ by
    more than `tolerance`, the machines (or the steps) differ, and every time ratio between them carries that."""
    by_size: dict[str, list[RunSummary]] = {}
    for r in runs:
        if r.final_size and len(r.steady_epochs) >= STEADY_NEEDED and not r.shared:  # a shared clock: not the machine's
            by_size.setdefault(r.final_size, []).append(r)
    out = []
    timed = [r for r in runs if not r.shared]
    unchecked = [r.name for r in timed if r.final_size and len(r.steady_epochs) < STEADY_NEEDED]
    if len(timed) >= 2 and unchecked:
        out.append(f"the speed of {', '.join(unchecked)} cannot be checked (fewer than {STEADY_NEEDED} steady epochs "
                   "at the final size): a time ratio may then carry a busy or different machine, not the method")
    for size, group in by_size.items():
        fast, slow = min(r.steady_epoch for r in group), max(r.steady_epoch for r in group)
        if slow > fast * (1 + tolerance):
            each = ", ".join(f"{r.name} {r.steady_epoch:.3f} s" for r in group)
            out.append(f"the same final net ({size}) trained at different speeds, {100 * (slow / fast - 1):.1f}% apart "
                       f"(steady epoch: {each}): different machines or a different step; the time ratios include it")
    return out


EPOCH_CLOCK = "final-net epochs"


def on_epoch_clock(runs: list[RunSummary]) -> list[RunSummary]:
    """The runs with their time in epochs of the final net on each run's own machine: every epoch's share of the clock
    divided by the plain epoch of the machine that trained it, the run's own there, or, for a run without one there
    (MG/OPT; a run resumed on another machine), that of the runs that end at the same net on that machine. Runs timed
    on different machines then compare, and so do the parts of a run resumed elsewhere; what the unit assumes is that
    a machine's speed on the smaller nets a growth trains scales like its speed on the final one."""
    units: dict[tuple, list[float]] = {}
    for r in runs:
        for machine, unit in r.plain_epoch_by_machine.items():
            units.setdefault((r.final_size, machine), []).append(unit)

    def unit(r: RunSummary, machine: str | None) -> float:
        if (own := r.plain_epoch_by_machine.get(machine)) is not None:
            return own
        if (key := (r.final_size, machine)) in units:
            return median(units[key])
        raise ResgrowError(f"--clock epochs: {r.name} has no plain epochs at its final size to time it with, and "
                           f"no other run ends at that net on its machine ({machine}): add such a run")

    out = []
    for r in runs:
        on = {m: unit(r, m) for m in {r.machine_at(x["epoch"]) for x in r.log}}
        log, clock, before = [], 0.0, 0.0
        for x in r.log:  # each epoch's share of the clock (its size change included) at its own machine's rate
            u = on[r.machine_at(x["epoch"])]
            clock, before = clock + (x["train_seconds"] - before) / u, x["train_seconds"]
            log.append(dict(x, train_seconds=clock,
                            **({"epoch_seconds": x["epoch_seconds"] / u} if x.get("epoch_seconds") else {})))
        out.append(replace(r, train_seconds=clock, log=log, clock=EPOCH_CLOCK))
    return out


def time_unit(runs: list[RunSummary]) -> str:
    """What the runs' time is in, for a header: s, or the epoch clock's unit."""
    return runs[0].clock


SHARED = " (shared GPU)"  # a time measured while other runs trained on the same device: no ratio is taken


def compare_table(runs: list[RunSummary], gap: float = 0.3) -> str:
    """Markdown table; ratios and the accuracy target are relative to runs[0]."""
    base = runs[0]
    target = base.test_acc - gap / 100
    extra = list({c.title: c for r in runs for c in r.columns}.values())  # the methods' own columns, each once
    u = time_unit(runs)
    head = ["run", "epochs", "final test acc", "vs first (points)", f"training {u}", "time vs first",
            "training FLOPs vs first", "param-epochs vs first", f"time to {target:.2%} ({u}, epoch)", "growths",
            *(c.title for c in extra), f"steady epoch at final size ({u})", "lr schedule"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        own = {c.title: c for c in r.columns}
        tta = r.time_to(target)
        flops = f"{r.flops / base.flops:.2f}x" if base.flops else "-"
        pe = f"{r.param_epochs / base.param_epochs:.2f}x" if base.param_epochs else "-"
        mark = SHARED if r.shared else ""
        ratio = "-" if r.shared or base.shared else f"{r.train_seconds / base.train_seconds:.2f}x"
        lines.append(
            f"| {r.name} | {r.epochs} | {r.test_acc:.2%} | {100 * (r.test_acc - base.test_acc):+.2f} | "
            f"{r.train_seconds:.1f}{mark} | {ratio} | {flops} | {pe} | "
            f"{f'{tta[0]:.1f} ({tta[1]}){mark}' if tta else 'not reached'} | {'; '.join(r.growths) or '-'} "
            + "".join(f"| {own[c.title].value(r.log) if c.title in own else '-'} " for c in extra)
            + f"| {f'{r.steady_epoch:.3f}{mark}' if r.steady_epoch is not None else '-'} | {r.lr_schedule} |")
    return "\n".join(lines)


def stages_table(runs: list[RunSummary]) -> str:
    """Markdown: per run, per size it trained (in order), the epochs, seconds, their share of the run's time and
    a second per epoch, and the size's FLOPs per image against the run's final size: which phase costs what."""
    head = ["run", "size (blocks x widths)", "epochs", "training s", "share of the run", "s per epoch",
            "FLOPs/image vs final"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        final = r.stages[-1]["flops"]
        for st in r.stages:
            rel = f"{st['flops'] / final:.2f}x" if final else "-"
            lines.append(f"| {r.name} | {st['size']} | {st['epochs']} | {st['seconds']:.1f} | "
                         f"{st['seconds'] / r.train_seconds:.0%} | {st['seconds'] / st['epochs']:.1f} | {rel} |")
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot drawing to files only; one clear error when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ResgrowError("--plot needs matplotlib: pip install 'resgrow[plot]'") from None
    return plt


def plot_runs(runs: list[RunSummary], path: str | Path, gap: float = 0.3) -> None:
    """Test accuracy against training seconds and against epochs, growths marked; and the model's
    size (GFLOPs per image) against training seconds, which shows where each method spends its time.

    The dashed line is the time-to-accuracy target: the first run's final accuracy minus `gap` points.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    scaled = [r for r in runs if any(x.get("lr_scales") for x in r.log)]  # runs that adapt the lr per growth
    fig, axes = plt.subplots(1, 3 + bool(scaled), figsize=(17 + 5.5 * bool(scaled), 5))
    axes[1].sharey(axes[0])
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    for k, r in enumerate(runs):
        point = lambda x: (x["train_seconds"], x["epoch"], 100 * x["test_acc"])  # noqa: E731
        pts = [point(x) for x in r.log if x.get("test_acc") is not None]
        grew = [point(x) for x in r.grow_rows if x.get("test_acc") is not None]
        color = f"C{k % 10}"
        # a shared clock is not the run's own: such a run is drawn against epochs only
        for ax, i in ((axes[1], 1),) if r.shared else zip(axes, (0, 1)):
            label = r.name + (SHARED + ": epochs only" if r.shared else "")
            ax.plot([p[i] for p in pts], [p[2] for p in pts], label=label, lw=1.2, color=color)
            if grew:
                ax.plot([g[i] for g in grew], [g[2] for g in grew], "o", color=color, ms=5)
        secs, gflops = size_steps(r)
        if secs and not r.shared:  # later runs thinner, dashed and on top, with a dot where they end: runs that end
            # at the same size share a line there, and each must stay visible on it
            axes[2].step(secs, gflops, where="post", color=color, lw=max(3.5 - 0.8 * k, 1.2), zorder=2 + k,
                         ls="-" if k == 0 else (0, (4 + k, 2 + k)))
            axes[2].plot(secs[-1:], gflops[-1:], "o", color=color, ms=6, zorder=12)
    target = 100 * runs[0].test_acc - gap
    if scaled:
        _plot_lr_scales(axes[3], scaled, runs)
    clock = "training seconds" if time_unit(runs) == "s" else f"training time ({time_unit(runs)})"
    for ax, xlabel in zip(axes, (clock, "epoch", clock, "epoch")):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.axhline(target, color="grey", ls="--", lw=0.8)
    finals = [100 * r.test_acc for r in runs]
    axes[0].set_ylim(min(finals) - 12, max(finals) + 1.5)
    axes[0].set_ylabel("test accuracy (%)")
    axes[2].set_ylabel("model size (GFLOPs per image, forward)")
    axes[2].set_ylim(bottom=0)
    fig.legend(*axes[1].get_legend_handles_labels(), loc="lower center", ncol=min(len(runs), 5), fontsize=8)
    fig.suptitle(f"{_what(runs[0])}\ndots: growth; dashed: {runs[0].name} final - {gap:g} points ({target:.2f}%)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(runs) - 1) // 5), 1, 1))  # room for the legend below
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_lr_scales(ax, scaled: list[RunSummary], runs: list[RunSummary]) -> None:
    """Each growth's lr scale against epochs (widen's learning-rate adaptation): a line per group, darker
    for later growths, in the run's colour."""
    for r in scaled:
        color = f"C{runs.index(r) % 10}"
        rows = [x for x in r.log if x.get("lr_scales")]
        for g in range(max(len(x["lr_scales"]) for x in rows)):
            pts = [(x["epoch"], x["lr_scales"][g]) for x in rows if len(x["lr_scales"]) > g]
            ax.plot(*zip(*pts), color=color, lw=1.2, alpha=0.35 + 0.65 * g / max(1, len(rows[-1]["lr_scales"]) - 1),
                    label="_nolegend_")
    ax.set_ylabel("lr scale per growth (group t: ||W_t|| / ||W_0||)")


def _what(r: RunSummary) -> str:
    """The architecture and data of a run, for a title: resnet74 on cifar10-jpeg.zip."""
    info = r.info or {}
    data = Path(str(info.get("data", "?"))).name
    return f"{info.get('arch', '?')} on {data}"


def size_steps(r: RunSummary) -> tuple[list[float], list[float]]:
    """(training seconds, GFLOPs per image) at the start of every epoch and at the end of the run, for a step plot:
    each row's `flops` is the model trained during that epoch."""
    rows = [x for x in r.log if x.get("flops")]
    if not rows:
        return [], []
    secs = [0.0] + [x["train_seconds"] for x in rows[:-1]] + [rows[-1]["train_seconds"]]
    gflops = [x["flops"] / 1e9 for x in rows] + [rows[-1]["flops"] / 1e9]
    return secs, gflops


def seed_groups(runs: list[RunSummary]) -> dict[str, list[RunSummary]]:
    """Group runs whose directory names differ only in a trailing `_s<seed>`, in first-seen order."""
    groups: dict[str, list[RunSummary]] = {}
    for r in runs:
        groups.setdefault(re.sub(r"_s\d+$", "", r.name), []).append(r)
    return groups


def seeds_table(runs: list[RunSummary]) -> str:
    """One row per group of seeds: mean and spread of accuracy and time, ratios of the means to the first group."""
    groups = seed_groups(runs)
    base = next(iter(groups.values()))
    b_acc, b_sec = mean(r.test_acc for r in base), mean(r.train_seconds for r in base)
    b_flops, b_pe = mean(r.flops for r in base), mean(r.param_epochs for r in base)
    lines = [f"| runs | seeds | final test acc, mean (each seed) | vs first (points) | training {time_unit(runs)}, "
             "mean | time vs first | training FLOPs vs first | param-epochs vs first | growth epochs per seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, rs in groups.items():
        acc, sec = mean(r.test_acc for r in rs), mean(r.train_seconds for r in rs)
        each = ", ".join(f"{r.test_acc:.2%}" for r in rs)
        grows = "; ".join(",".join(str(x["epoch"]) for x in r.grow_rows) or "-" for r in rs)
        flops = f"{mean(r.flops for r in rs) / b_flops:.2f}x" if b_flops else "-"
        pe = f"{mean(r.param_epochs for r in rs) / b_pe:.2f}x" if b_pe else "-"
        shared = any(r.shared for r in rs)
        ratio = "-" if shared or any(r.shared for r in base) else f"{sec / b_sec:.2f}x"
        lines.append(f"| {name} | {len(rs)} | {acc:.2%} ({each}) | {100 * (acc - b_acc):+.2f} | "
                     f"{sec:.1f}{SHARED if shared else ''} | {ratio} | {flops} | {pe} | {grows} |")
    return "\n".join(lines)
