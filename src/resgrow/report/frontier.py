"""Is growing better than training shorter? The fixed-size baseline's accuracy-time frontier.

Plain baseline runs of one net and recipe at several budgets (epochs) give one frontier point per budget:
the mean training seconds and mean final-epoch test accuracy over its seeds, with their spread. Between
two neighbouring points the frontier is a straight line in seconds (linear interpolation); outside the
measured budgets it is not extrapolated. Every other run (a growth method, a baseline with restarts) is a
point held against it: the baseline's accuracy at the run's training time, and the time the baseline needs
for the run's accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from ..errors import ResgrowError
from .compare import RunSummary, pyplot, seed_groups, time_unit


@dataclass
class Point:
    name: str
    epochs: int
    seconds: float
    acc: float
    runs: list[RunSummary]
    work: float = 0.0  # training FLOPs per image, mean over the seeds (RunSummary.flops)

    @property
    def spread(self) -> tuple[float, float]:
        """(lowest, highest) final accuracy over the seeds."""
        accs = [r.test_acc for r in self.runs]
        return min(accs), max(accs)


def is_frontier_run(r: RunSummary) -> bool:
    """A plain fixed-size baseline: method baseline, no restarts of its own."""
    info = r.info or {}
    return info.get("method") == "baseline" and not (info.get("config") or {}).get("restarts")


def split_runs(runs: list[RunSummary]) -> tuple[list[Point], list[Point]]:
    """(frontier points by budget, in order of time; the other runs, one point per seed group)."""
    base = [r for r in runs if is_frontier_run(r)]
    if not base:
        raise ResgrowError("--frontier needs plain baseline runs (method baseline, no --restarts) at several budgets")
    specs = {str((r.info or {}).get("spec")) for r in base}
    if len(specs) > 1:
        raise ResgrowError("the baseline runs of a frontier must train one net; these train "
                           f"{len(specs)} different ones")
    by_epochs: dict[int, list[RunSummary]] = {}
    for r in base:
        by_epochs.setdefault(r.epochs, []).append(r)
    frontier = sorted((_point(f"baseline {e} epochs", rs) for e, rs in by_epochs.items()), key=lambda p: p.seconds)
    points = []
    for name, rs in seed_groups([r for r in runs if not is_frontier_run(r)]).items():
        budgets = sorted({r.epochs for r in rs})  # seeds of one setting: the same name and epochs
        points += [_point(name if len(budgets) == 1 else f"{name} ({e} epochs)", [r for r in rs if r.epochs == e])
                   for e in budgets]
    return frontier, points


def _point(name: str, runs: list[RunSummary]) -> Point:
    return Point(name, runs[0].epochs, mean(r.train_seconds for r in runs), mean(r.test_acc for r in runs), runs,
                 mean(r.flops for r in runs))


def acc_at(frontier: list[Point], x: float, key: str = "seconds") -> float | None:
    """The frontier's accuracy at `x` training seconds (or, key="work", training FLOPs), linear between the
    neighbouring budgets; None outside them."""
    at = lambda p: getattr(p, key)  # noqa: E731
    frontier = sorted(frontier, key=at)
    for a, b in zip(frontier, frontier[1:]):
        if at(a) <= x <= at(b):
            return a.acc + (b.acc - a.acc) * (x - at(a)) / (at(b) - at(a)) if at(b) > at(a) else b.acc
    if len(frontier) == 1 and x == at(frontier[0]):
        return frontier[0].acc
    return None


def time_for(frontier: list[Point], acc: float, key: str = "seconds") -> float | None:
    """The first time (or, key="work", FLOPs) along the frontier at which it reaches `acc` (linear between
    budgets); None when no measured budget reaches it, or the shortest already does (an extrapolation)."""
    at = lambda p: getattr(p, key)  # noqa: E731
    frontier = sorted(frontier, key=at)
    if not frontier or frontier[0].acc >= acc:
        return None
    for a, b in zip(frontier, frontier[1:]):
        if a.acc < acc <= b.acc:
            return at(a) + (at(b) - at(a)) * (acc - a.acc) / (b.acc - a.acc)
    return None


def verdict(frontier: list[Point], p: Point) -> str:
    at = acc_at(frontier, p.seconds)
    if at is not None:
        gap = 100 * (p.acc - at)
        return f"{'above' if gap > 0 else 'below'} the frontier ({gap:+.2f} points at its time)"
    first, last = frontier[0], frontier[-1]
    if p.seconds < first.seconds and p.acc > first.acc:
        return "above the frontier (faster and more accurate than the shortest budget)"
    if p.seconds > last.seconds and p.acc < last.acc:
        return "below the frontier (slower and less accurate than the longest budget)"
    return "not decided: outside the measured budgets (train the baseline at more budgets)"


def frontier_table(runs: list[RunSummary]) -> str:
    frontier, points = split_runs(runs)
    u = time_unit(runs)
    lines = [f"| baseline budget | runs | final test acc, mean (lowest, highest) | training {u}, mean |",
             "|---|---|---|---|"]
    for f in frontier:
        lo, hi = f.spread
        lines.append(f"| {f.epochs} epochs | {len(f.runs)} | {f.acc:.2%} ({lo:.2%}, {hi:.2%}) | {_t(f.seconds, u)} |")
    lines += ["", f"| run | seeds | final test acc | training {u} | baseline acc at this time | vs frontier (points) | "
              "baseline time for this acc | time vs baseline | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        at, need = acc_at(frontier, p.seconds), time_for(frontier, p.acc)
        need_text = "not reached" if p.acc > max(f.acc for f in frontier) else "-" if need is None else _t(need, u)
        lines.append(f"| {p.name} | {len(p.runs)} | {p.acc:.2%} | {_t(p.seconds, u)} | {_pct(at)} | "
                     f"{'-' if at is None else f'{100 * (p.acc - at):+.2f}'} | {need_text} | "
                     f"{'-' if need is None else f'{p.seconds / need:.2f}x'} | {verdict(frontier, p)} |")
    lines += ["", f"The frontier is linear in {'seconds' if u == 's' else u} between neighbouring budgets and not "
              "extrapolated beyond them; '-' marks a value outside the measured budgets, 'not reached' an accuracy "
              "above every budget's."]
    return "\n".join(lines + ["", *_work_table(frontier, points), "", *_target_table(frontier, points, u)])


def _work_table(frontier: list[Point], points: list[Point]) -> list[str]:
    """Every run against the frontier in work: training FLOPs (a method's extra passes, MG/OPT's, counted) in units
    of the longest budget's."""
    unit = max(frontier, key=lambda f: f.epochs).work
    if not unit:
        return []
    lines = [f"In work (training FLOPs, 1.00 = the fixed-size net's {max(f.epochs for f in frontier)} epochs):", "",
             "| run | work | baseline acc at this work | vs frontier (points) | baseline work for this acc | work vs "
             "baseline |", "|---|---|---|---|---|---|"]
    for p in points:
        at, need = acc_at(frontier, p.work, "work"), time_for(frontier, p.acc, "work")
        need_text = "-" if need is None else f"{need / unit:.2f}"
        need_text = "not reached" if p.acc > max(f.acc for f in frontier) else need_text
        lines.append(f"| {p.name} | {p.work / unit:.2f} | {_pct(at)} | "
                     f"{'-' if at is None else f'{100 * (p.acc - at):+.2f}'} | {need_text} | "
                     f"{'-' if need is None else f'{p.work / need:.2f}x'} |")
    return lines


TARGET_BELOW = 0.003  # time to the longest budget's accuracy minus 0.3 points: "as good", allowing for seed noise


def _target_table(frontier: list[Point], points: list[Point], u: str = "s") -> list[str]:
    """When each run first reached the longest budget's final accuracy minus TARGET_BELOW, in training time."""
    longest = max(frontier, key=lambda f: f.epochs)
    target = longest.acc - TARGET_BELOW
    ref = _mean_time_to(longest, target)
    lines = [f"Time to {target:.2%} (the {longest.epochs}-epoch baseline's final accuracy minus "
             f"{100 * TARGET_BELOW:.1f} points; the first evaluated epoch at or above it, mean over the seeds):", "",
             f"| run | seeds | training {u} to it | vs the baseline's |", "|---|---|---|---|"]
    for name, p in [*((f"baseline {f.epochs} epochs", f) for f in frontier), *((p.name, p) for p in points)]:
        t = _mean_time_to(p, target)
        missed = sum(r.time_to(target) is None for r in p.runs)
        text = f"not reached by {missed} of {len(p.runs)}" if t is None else _t(t, u)
        lines.append(f"| {name} | {len(p.runs)} | {text} | {'-' if t is None or not ref else f'{t / ref:.2f}x'} |")
    return lines


def _mean_time_to(p: Point, target: float) -> float | None:
    times = [r.time_to(target) for r in p.runs]
    return None if any(t is None for t in times) else mean(t[0] for t in times)


def _t(x: float, unit: str) -> str:
    """A time: seconds to a tenth, epochs to a hundredth."""
    return f"{x:.1f}" if unit == "s" else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def plot_frontier(runs: list[RunSummary], path: str | Path) -> None:
    """The frontier (mean of the seeds, their spread as bars) and every other run as a point."""
    plt = pyplot()
    frontier, points = split_runs(runs)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs, ys = [f.seconds for f in frontier], [100 * f.acc for f in frontier]
    err = [[100 * (f.acc - f.spread[0]) for f in frontier], [100 * (f.spread[1] - f.acc) for f in frontier]]
    ax.errorbar(xs, ys, yerr=err, fmt="-o", color="k", capsize=3, label="fixed-size baseline (budgets)")
    for f in frontier:
        ax.annotate(f"{f.epochs} ep", (f.seconds, 100 * f.acc), textcoords="offset points", xytext=(4, -12), fontsize=8)
    for k, p in enumerate(points):
        ax.scatter([r.train_seconds for r in p.runs], [100 * r.test_acc for r in p.runs], color=f"C{k % 10}",
                   alpha=0.4, s=14)
        ax.scatter([p.seconds], [100 * p.acc], color=f"C{k % 10}", marker="*", s=140, label=p.name, zorder=3)
    u = time_unit(runs)
    ax.set_xlabel("training seconds" if u == "s" else f"training time ({u}, each run on its own machine)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("Accuracy against training time: each method against the baseline's frontier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
