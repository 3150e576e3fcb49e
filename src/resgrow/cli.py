"""Command line: `resgrow train`, `together` (several runs in one process), `eval`, `bench`, `compare`,
and the catalogues `models` and `methods`.

Every problem a user can fix is reported as one line on stderr with a non-zero exit
(2: bad input; 3: training diverged), and nothing in an existing run directory is overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import types
from pathlib import Path

from . import __version__
from .config import TrainConfig, add_config_flags
from .errors import DivergedError, ResgrowError, first_line
from .resume import shown


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=_Help, **kwargs)

    def error(self, message):  # one line, not usage + error
        raise ResgrowError(message)


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help names it already or there is none to name."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (action.option_strings and "default" not in text and "%(default)" not in text
                and default is not None and default is not False and default != () and default != argparse.SUPPRESS):
            text += f" (default {shown(default) if isinstance(default, tuple) else '%(default)s'})"
        return text


def build_parser(methods: bool = False) -> argparse.ArgumentParser:
    """The command line. `methods`: also the methods' options of `train` (importing the methods loads torch,
    which `--help` and the catalogue commands need not wait for)."""
    p = _Parser(prog="resgrow", description="Train residual networks faster by changing their size while they learn.")
    p.add_argument("--version", action="version", version=f"resgrow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_train_parser, _together_parser, _bench_parser, _eval_parser, _compare_parser, _catalogue_parsers):
        add(sub, methods)
    return p


def _train_parser(sub, methods: bool) -> None:
    t = sub.add_parser("train", help="train a model (fixed size or with a growth method)")
    t.add_argument("--arch", default=None, help="model name (resnet56, preact_resnet20, wrn16_4, resnet18, ...): the "
                   "final architecture; or package.module:function for a model of your own (fixed size, called with "
                   "num_classes=N); --resume takes the run's")
    t.add_argument("--data", default=None, help="cifar10 | cifar100 | cifar10-sample (2,500 images that ship with "
                   "resgrow) | path to an ImageFolder directory or zip (train/<class>/*, test/<class>/* or "
                   "val/<class>/*), or Tiny-ImageNet's zip as distributed; --resume takes the run's")
    t.add_argument("--out", required=True, help="run directory (must not exist or be empty, unless --resume)")
    t.add_argument("--method", default=None, help="training method (default: baseline, the fixed-size net; --resume "
                   "takes the run's); or package.module:Class for a method of your own (a resgrow.methods.Method)")
    t.add_argument("--val-size", type=int, default=None, help="images carved out of train as a validation split "
                   "(default 0)")
    t.add_argument("--image-size", type=int, default=None, help="ImageFolder data: bring every image to N x N when "
                   "decoding (shorter side to N, centre crop); needed when the images differ in size")
    t.add_argument("--recipe", default=None, choices=("imagenet", "vit"), help="a preset for what the command leaves "
                   "out: imagenet = torchvision's reference ResNet recipe (90 epochs, global batch 256 at lr 0.1, wd "
                   "1e-4, lr x0.1 at epochs 30 and 60, streamed 224 px random-resized crops); vit = AdamW at lr 1e-3, "
                   "wd 0.05, label smoothing 0.1, warm-up over 5%% of the epochs, cosine (DeiT's, at CIFAR's scale)")
    t.add_argument("--stream", action="store_true", help="read the images from their ImageFolder zip or directory as "
                   "training goes (host workers read them; --decode says where they are decoded), for sets that do not "
                   "fit in device memory; --image-size is then the crop size (default 224)")
    t.add_argument("--stream-augment", default=None, choices=("imagenet", "crop"), help="streamed augmentation: "
                   "random-resized crop + flip (imagenet, the default), or pad-4 crop + flip as in memory (crop)")
    t.add_argument("--decode", default=None, choices=("auto", "host", "device"), help="streamed data: where training "
                   "JPEGs are decoded and cropped: on the GPU by torchvision's nvJPEG decoder (device), by the host "
                   "workers (host), or on the GPU where that decoder is at hand (auto, the default)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint, with the "
                   "settings it started with (only --device, --eval-batch-size, --workers, --stop-after, --quiet, "
                   "--data-dir, --cache-dir and the path of the same --data may change)")
    t.add_argument("--stop-after", type=int, default=None, help="stop (resumably) after this epoch, e.g. to fit a "
                   "job's time limit")
    t.add_argument("--data-dir", default="data", help="where cifar10/cifar100 python-format folders live")
    t.add_argument("--cache-dir", default=None, help="where decoded ImageFolder data is cached (default $RESGROW_CACHE "
                   "or ~/.cache/resgrow)")
    add_config_flags(t.add_argument_group("training settings"))
    if methods:
        from .methods import all_options

        g = t.add_argument_group("options of the methods (`resgrow methods NAME` for a method's card)")
        for option, _ in all_options():
            kind = {"action": argparse.BooleanOptionalAction} if option.type is bool else {"type": option.type}
            g.add_argument(option.flag, dest=option.name, default=None, help=option.help.replace("%", "%%"), **kind)


def _together_parser(sub, methods: bool) -> None:
    w = sub.add_parser("together", help="train several runs at once in one process (a thread and CUDA stream each), to "
                       "fill a big GPU with small nets; for accuracy, not timing",
                       description="Train several runs at once in one process, each in a thread with its own CUDA "
                       "stream. "
                       "Each run trains as it would alone, but its training seconds count the others' time too: "
                       "run.json records it (shared_device) and `resgrow compare` marks it. Use it for accuracy "
                       "(seeds, restart baselines), not to time a method.")
    w.add_argument("commands", nargs="+", help="the arguments of each `resgrow train`, quoted as one string per run, "
                   "e.g. \"--arch resnet20 --data cifar10 --seed 0 --out runs/s0\"")


def _bench_parser(sub, methods: bool) -> None:
    b = sub.add_parser("bench", help="training throughput: eager fp32 vs the fast path (CUDA)")
    b.add_argument("--arch", default="resnet56", help="registry name, or package.module:function for a model of your "
                   "own")
    b.add_argument("--batch-size", type=int, default=128, help="images per step")
    b.add_argument("--device", default="auto", help="auto | cuda | cpu | cuda:N (the fast path needs CUDA)")
    b.add_argument("--steps", type=int, default=200, help="timed steps per variant, after a warm-up")
    b.add_argument("--data", default=None, help="real data (ImageFolder dir/zip, cifar10); default: random images of "
                   "CIFAR size")
    b.add_argument("--data-dir", default="data", help="where cifar10/cifar100 python-format folders live")
    b.add_argument("--json", default=None, help="also write the results to this JSON file")
    b.add_argument("--compile", action="store_true", help="also time the fast path with compiled blocks (--compile "
                   "blocks); compile time is reported")
    b.add_argument("--h", type=float, default=1.0,
                   help="every block's step size h, as in a grown net (0.25: resnet74 grown twice from 3-3-3); also "
                        "times the default fast path without h folded into the branches")
    b.add_argument("--widths", default=None, metavar="W1-W2-W3",
                   help="the registry net at these stage widths, its stem and inner widths scaled alike (as width "
                        "growth builds them): how fast a narrower net trains on this device")


def _eval_parser(sub, methods: bool) -> None:
    e = sub.add_parser("eval", help="evaluate a run's model (its last checkpoint) on a dataset")
    e.add_argument("run", help="run directory (or a checkpoint file)")
    e.add_argument("--data", default=None, help="cifar10 | cifar100 | cifar10-sample | ImageFolder directory or zip "
                   "(default: the run's own data)")
    e.add_argument("--data-dir", default="data", help="where cifar10/cifar100 python-format folders live")
    e.add_argument("--cache-dir", default=None, help="where decoded ImageFolder data is cached (default $RESGROW_CACHE "
                   "or ~/.cache/resgrow)")
    e.add_argument("--image-size", type=int, default=None, help="bring ImageFolder images to N x N (default: the run's "
                   "--image-size)")
    e.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="which split (default test; val exists when the run used --val-size)")
    e.add_argument("--device", default="auto", help="auto | cuda | cpu | cuda:N")
    e.add_argument("--arch", default=None, help="a run of a model of your own: the package.module:function it was "
                   "trained with")
    e.add_argument("--batch-size", type=int, default=1000, help="images per evaluation batch")
    e.add_argument("--json", default=None, help="also write the result to this JSON file")


def _compare_parser(sub, methods: bool) -> None:
    c = sub.add_parser("compare", help="compare finished runs with the first one (accuracy, time, FLOPs, time to "
                       "accuracy)")
    c.add_argument("runs", nargs="+", help="run directories; the first is the baseline")
    c.add_argument("--gap", type=float, default=0.3,
                   help="time to accuracy: target = the first run's final accuracy minus this many points "
                   "(default 0.3)")
    c.add_argument("--seeds", action="store_true", help="also one row per group of runs that differ only in a trailing "
                   "_s<seed> (e.g. multilevel_r74_s0, multilevel_r74_s1): mean accuracy and time over the seeds")
    c.add_argument("--plot", default=None, help="also save test accuracy against training seconds and epochs, and "
                   "model size against training seconds, to this image (pip install 'resgrow[plot]')")
    c.add_argument("--stages", action="store_true", help="also, per run, where its time went: each size it trained "
                   "(blocks x widths, in order) with its epochs, seconds and share of the run, and its FLOPs per image "
                   "against the final size")
    c.add_argument("--frontier", action="store_true", help="hold every run against the fixed-size baseline's "
                   "accuracy-time frontier, from plain baseline runs of the net at several --epochs (seeds averaged): "
                   "the baseline's accuracy at each run's time and its time for each run's accuracy; --plot draws it")
    c.add_argument("--clock", default="seconds", choices=("seconds", "epochs"), help="what time is measured in: "
                   "training seconds (default), or epochs of the final net on each run's own machine (its seconds over "
                   "its median plain epoch at the final size), so that runs timed on different machines compare")


def _catalogue_parsers(sub, methods: bool) -> None:
    m = sub.add_parser("models", help="the architecture names --arch takes, with their size")
    m.add_argument("--classes", type=int, default=10, help="classes of the head the sizes are counted for (default 10)")
    k = sub.add_parser("methods", help="the training methods --method takes; with a name, its method card")
    k.add_argument("name", nargs="?", default=None, help="a method: print its card (paper, defaults, options, when it "
                   "helps)")


def _models(args) -> int:
    from .models.registry import model_table

    if args.classes < 1:
        raise ResgrowError(f"--classes must be >= 1, not {args.classes}")
    print(f"| arch | block | blocks | widths | shortcut | params ({args.classes} classes) | forward MFLOPs/image |")
    print("|---|---|---|---|---|---|---|")
    for r in model_table(args.classes):
        print(f"| {r['name']} | {r['block']} | {r['blocks']} | {r['widths']} | {r['shortcut']} | "
              f"{r['params'] / 1e6:.2f}M | {r['flops'] / 1e6:,.0f} at {r['image_size']}x{r['image_size']} |")
    print("\nAlso by rule: cifar_resnetD and preact_resnetD (D = 6n+2), wrnD_K (D = 6n+4, widen factor K); or "
          "package.module:function for a model of your own.")
    return 0


def _methods(args) -> int:
    from .methods import METHODS, method_class

    if args.name is not None:
        print(method_class(args.name).card())
        return 0
    for name, cls in sorted(METHODS.items(), key=lambda kv: kv[0] != "baseline"):
        paragraphs = [" ".join(p.split()) for p in cls.card().split("\n\n")]
        lines = [paragraphs[0].removeprefix("Method card: ")]  # whose (the paper), or what for a card without one
        lines += [p.split(". ")[0].rstrip(".") + "." for p in paragraphs if p.startswith("What it does:")]
        lines.append("options: " + (", ".join(o.flag for o in cls.options()) or "none"))
        print(name + "".join(f"\n  {line}" for line in lines))
    print("\n`resgrow methods NAME` prints a method's card.")
    return 0


def _compare(args) -> int:
    from .report.compare import load_run, on_epoch_clock, stages_table

    runs = [load_run(d) for d in args.runs]
    timed = on_epoch_clock(runs) if args.clock == "epochs" else runs
    rc = _frontier(args, timed) if args.frontier else _table(args, timed)
    if args.stages:
        print()
        print(stages_table(runs))  # seconds: a stage's share of one run's own clock
    return rc


def _clock_skips(args) -> tuple[str, ...]:
    """On the epoch clock each run is timed on its own machine: machines and speeds may differ."""
    return ("device", "speed") if args.clock == "epochs" else ()


def _table(args, runs) -> int:
    from .report.compare import compare_table, plot_runs, protocol_warnings, seeds_table

    print(compare_table(runs, args.gap))
    if args.seeds:
        print()
        print(seeds_table(runs))
    warnings = protocol_warnings(runs, skip=_clock_skips(args))
    if warnings:
        print()
        for w in warnings:
            print(f"> warning: {w}")
    if args.plot:
        try:
            plot_runs(runs, args.plot, args.gap)
        except ResgrowError as e:  # no matplotlib: the table stands on its own
            print(f"resgrow: no plot: {e}", file=sys.stderr)
            return 0
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def _frontier(args, runs) -> int:
    from .report.compare import protocol_warnings
    from .report.frontier import frontier_table, plot_frontier

    print(frontier_table(runs))
    for w in protocol_warnings(runs, skip=("epochs", *_clock_skips(args))):
        print(f"> warning: {w}")
    if args.plot:
        try:
            plot_frontier(runs, args.plot)
        except ResgrowError as e:
            print(f"resgrow: no plot: {e}", file=sys.stderr)
            return 0
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def _train(args) -> int:
    trainer = _prepare_train(args)
    try:
        with _stop_on_signals([trainer]) as stop:
            rows = trainer.fit(until=args.stop_after)
        return _report(trainer, rows, stop.signal)
    finally:
        trainer.ranks.close()


def _load_own_methods(argv: list[str]) -> None:
    """--method package.module:Class: import and register the class before the parser is built, so that its
    options are flags like any method's."""
    from .methods import method_class
    from .refs import is_ref

    for i, token in enumerate(argv):
        if token == "--method" and i + 1 < len(argv):
            name = argv[i + 1]
        elif token.startswith("--method="):
            name = token.partition("=")[2]
        else:
            continue
        if is_ref(name):
            method_class(name)


def _request(args):
    """`resgrow train`'s arguments as the library's RunRequest (flags not given are None)."""
    from dataclasses import fields

    from .launch import RunRequest
    from .methods import all_options

    given = {name: getattr(args, name) for name in ("out", "arch", "data", "method", "val_size", "image_size", "recipe",
                                                    "stream", "stream_augment", "decode", "data_dir", "cache_dir",
                                                    "resume", "stop_after")}
    return RunRequest(**given, method_options={o.name: getattr(args, o.name, None) for o, _ in all_options()},
                      settings={f.name: getattr(args, f.name, None) for f in fields(TrainConfig)},
                      command=list(getattr(args, "argv", None) or sys.argv[1:]))


def _prepare_train(args, label: str = ""):
    from .launch import prepare_run

    return prepare_run(_request(args), label)


def _report(trainer, rows, sig: int = signal.SIGTERM) -> int:
    """The run's last line: where it stopped and how to go on, or its final accuracy; the exit code.
    `sig`: the signal that asked the run to stop, if it did. Several processes: rank 0 says it."""
    cfg, out = trainer.cfg, trainer.out
    if not trainer.ranks.main:
        return 128 + sig if trainer.stop_requested and trainer.epoch < cfg.epochs else 0
    if trainer.stop_requested and trainer.epoch < cfg.epochs:
        print(f"resgrow: stopped on {signal.Signals(sig).name} after epoch {trainer.epoch}/{cfg.epochs}; checkpoint "
              f"written (continue with: {_resume_command(out)})", file=sys.stderr)
        return 128 + sig
    last = rows[-1] if rows else {}
    if trainer.epoch < cfg.epochs:  # --stop-after
        acc = f"test accuracy {last['test_acc']:.2%}, " if "test_acc" in last else ""
        print(f"stopped after epoch {trainer.epoch}/{cfg.epochs} (--stop-after): {acc}training time "
              f"{trainer.train_seconds:.1f}s; continue with: {_resume_command(out)}")
    elif "test_acc" in last:
        print(f"final epoch {last['epoch']}: test accuracy {last['test_acc']:.2%}, training time "
              f"{last['train_seconds']:.1f}s; run in {out}")
    return 0


def _together(args) -> int:
    """Several `resgrow train` commands in one process, each in a thread with its own CUDA stream
    (train/together.py)."""
    from .train.together import check_together, fit_together

    if len(args.commands) < 2:
        raise ResgrowError("together needs at least two quoted train commands, e.g. resgrow together \"--arch resnet20 "
                           "--data cifar10 --seed 0 --out runs/s0\" \"... --seed 1 --out runs/s1\"")
    parsed = []
    for text in args.commands:
        argv = shlex.split(text)
        if argv[:1] == ["train"]:
            argv = argv[1:]
        _load_own_methods(argv)
        args = build_parser(methods=True).parse_args(["train", *argv])
        args.argv = ["train", *argv]
        parsed.append(args)
    outs = [Path(x.out).resolve() for x in parsed]
    if len(set(outs)) < len(outs):
        raise ResgrowError("each command trained together needs an --out of its own")
    stops = {x.stop_after for x in parsed}
    if len(stops) > 1:
        raise ResgrowError("--stop-after must be the same in every command trained together (or in none)")
    trainers = []
    for x in parsed:  # every check and every run's data before the first epoch
        try:
            trainers.append(_prepare_train(x, f"{Path(x.out).name}: "))
        except ResgrowError as e:
            raise ResgrowError(f"{x.out}: {e}") from None
    check_together(trainers)
    how = "threads, a CUDA stream each" if trainers[0].device.type == "cuda" else "threads"
    print(f"resgrow: training {len(trainers)} runs together on {trainers[0].device} ({how}); "
          "their training seconds count each other's time: compare their accuracy, not their time", file=sys.stderr)
    with _stop_on_signals(trainers) as stop:
        results = fit_together(trainers, until=stops.pop())
    codes = []
    for t, res in zip(trainers, results):
        if isinstance(res, BaseException):
            codes.append(_failed(t, res))
        else:
            codes.append(_report(t, res, stop.signal))
    return max(codes)


def _failed(trainer, e: BaseException) -> int:
    """A run of `together` that ended with an error (the others went on): one line naming it, as `train`
    would say it, after the traceback of an unexpected one."""
    code = _report_error(e, str(trainer.out), kept=_kept(trainer.out) if isinstance(e, KeyboardInterrupt) else "")
    if code is None:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)
        print(f"resgrow: error: {trainer.out}: {first_line(e, 1000)}", file=sys.stderr)
        code = 1
    return code


# SIGTERM: a scheduler's preemption or time-limit notice. SIGUSR1: the notice that a job asks Slurm for ahead of
# its time limit (`#SBATCH --signal=USR1@120`), since Slurm's SIGTERM at the limit leaves only KillWait (30 s
# by default) before SIGKILL, which may be shorter than an epoch.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


@contextlib.contextmanager
def _stop_on_signals(trainers):
    """SIGTERM or SIGUSR1 ends the runs after their current epoch, with a checkpoint; a second one stops at
    once, keeping the last checkpoint. Yields a namespace whose `signal` is the one that came (SIGTERM if none)."""
    stop = types.SimpleNamespace(signal=signal.SIGTERM)

    def handler(signum, frame):
        if all(t.stop_requested for t in trainers):
            raise KeyboardInterrupt
        stop.signal = signum
        for t in trainers:
            t.request_stop()
        print(f"resgrow: {signal.Signals(signum).name}: stopping after this epoch, with a checkpoint (send it again "
              "to stop now)", file=sys.stderr, flush=True)

    try:
        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread: leave signals alone
        yield stop
        return
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _eval(args) -> int:
    from .train.saved import evaluate_run

    if args.batch_size < 1:
        raise ResgrowError(f"--batch-size must be >= 1, not {args.batch_size}")

    r = evaluate_run(args.run, args.data, args.split, args.device, args.data_dir, args.cache_dir, args.image_size,
                     args.batch_size, arch=args.arch)
    print(f"{r['split']} accuracy {r['acc']:.2%} (loss {r['loss']:.4f}) on {r['images']} images of {r['dataset']}; "
          f"model of epoch {r['epoch']}/{r['epochs'] or '?'}, "
          + (f"blocks {r['blocks']}, widths {r['widths']}" if "blocks" in r else r["model"]))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(r, run=str(args.run)), indent=2) + "\n")
    return 0


def _bench_spec(args):
    """The net `resgrow bench` times: None for a model of the user's own (checked here), else the registry's
    ArchSpec, at --widths if given."""
    from .grow.width import wider_spec
    from .models.custom import is_custom, model_factory
    from .models.registry import spec_for

    if is_custom(args.arch):
        model_factory(args.arch)
        if args.h != 1 or args.widths is not None:
            flag, what = ("--h", "step size") if args.h != 1 else ("--widths", "widths")
            raise ResgrowError(f"{flag} sets the {what} of resgrow's residual blocks; use it with a registry --arch")
        return None
    spec = spec_for(args.arch)
    if args.widths is None:
        return spec
    if spec.block == "vit":
        raise ResgrowError("--widths sets a ResNet's stage widths; time a ViT of other widths by its name (vitD_W)")
    try:
        widths = tuple(int(w) for w in args.widths.split("-"))
    except ValueError:
        raise ResgrowError(f"--widths must look like 16-32-64, not {args.widths!r}") from None
    if min(widths) < 1:
        raise ResgrowError(f"--widths must be positive, not {args.widths!r}")
    return wider_spec(spec, widths)


def _bench(args) -> int:
    from .bench import bench, format_results, synthetic_split, train_default
    from .data.sources import load_dataset
    from .models.registry import build
    from .train.device import resolve_device

    if args.steps < 1 or args.batch_size < 1:
        raise ResgrowError(f"--steps and --batch-size must be >= 1 (got {args.steps}, {args.batch_size})")
    if not 0 < args.h <= 1:
        raise ResgrowError(f"--h must be in (0, 1] (got {args.h:g})")
    spec = _bench_spec(args)
    device = resolve_device(args.device)
    if args.data:
        ds = load_dataset(args.data, root=args.data_dir)
        split, classes, src = ds.train, ds.num_classes, ds.name
    else:
        split, classes, src = synthetic_split(), 10, "random uint8 images"
    narrowed = spec if args.widths is not None else None
    results = bench(args.arch, args.batch_size, device, split, classes, steps=args.steps, compile_blocks=args.compile,
                    h=args.h, spec=narrowed)
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    label = f"{args.arch} at {narrowed.widths_str()} (stem {narrowed.stem_width})" if narrowed else args.arch
    default = train_default(device, build(spec) if spec is not None else None)
    print(format_results(label, args.batch_size, f"{name} ({src})", results, args.h, default))
    if device.type != "cuda":
        from .train.device import cpu_bf16_flags, cpu_name

        flags = cpu_bf16_flags()
        print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}: "
              f"{'native bf16 (' + ', '.join(flags) + ')' if flags else 'no native bf16: bf16 is emulated'}; "
              "CUDA graphs need a GPU")
    if args.json:
        record = {"arch": args.arch, "widths": args.widths, "batch_size": args.batch_size, "device": name, "data": src,
                  "h": args.h, "results": results}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    args = None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if not argv:  # `resgrow` alone: what it can do
            build_parser().print_help(sys.stderr)
            return 2
        if argv[0] == "train":
            _load_own_methods(argv)
        args = build_parser(methods=argv[0] in ("train", "together")).parse_args(argv)
        args.argv = argv  # run.json's command: the one given, also from Python
        return {"train": _train, "together": _together, "bench": _bench, "compare": _compare, "eval": _eval,
                "models": _models,
                "methods": _methods}[args.command](args)
    except BrokenPipeError:  # `resgrow compare ... | head` closed our stdout: it has read all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail again
        return 128 + 13  # as a command that SIGPIPE ended
    except (ResgrowError, OSError, RuntimeError, KeyboardInterrupt) as e:
        code = _report_error(e, kept=_interrupted_runs(args) if isinstance(e, KeyboardInterrupt) else "")
        if code is None:
            raise
        return code


def _kept(out) -> str:
    """What an interrupted run leaves in its run directory to go on from."""
    from .train.run_dir import has_checkpoint, never_trained

    if has_checkpoint(Path(out)):
        return f"; the last checkpoint is kept (continue with: {_resume_command(out)})"
    if never_trained(Path(out)):
        return "; no epoch had ended, so there is no checkpoint: the same command starts the run again"
    return ""


def _resume_command(out) -> str:
    """The whole command that goes on with a stopped run: the run directory holds every other setting."""
    return shlex.join(["resgrow", "train", "--resume", "--out", str(out)])


def _interrupted_runs(args) -> str:
    command = getattr(args, "command", None)
    if command == "train":
        return _kept(args.out)
    if command == "together":
        return "; each run keeps its last checkpoint, if it wrote one (continue with --resume)"
    return ""


def _report_error(e: BaseException, run: str = "", kept: str = "") -> int | None:
    """One line on stderr for a problem the user can fix, and the exit code; None for anything else (a bug,
    whose traceback is the report). `run` names the run of `together` it ended; `kept` says what an
    interrupted run can go on from."""
    where = f"{run}: " if run else ""
    if isinstance(e, KeyboardInterrupt):
        print(f"resgrow: {where}interrupted{kept}", file=sys.stderr)
        return 130
    if isinstance(e, (ResgrowError, OSError)):  # OSError: the file system said no (permissions, full disk, ...)
        print(f"resgrow: error: {where}{e}", file=sys.stderr)
        return 3 if isinstance(e, DivergedError) else 2
    if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError (torch.OutOfMemoryError in 2.5+)
        said = " ".join(str(e).split())
        short = re.match(r".*?Tried to allocate [\d.]+ \w+\.", said)  # torch's first two sentences
        said = short.group(0) if short else said[:120]
        print(f"resgrow: error: {where}{said} Try a smaller --batch-size or --image-size (a new run), or "
              "--eval-batch-size (also with --resume); the last checkpoint, if any, is kept", file=sys.stderr)
        return 2
    return None

if __name__ == "__main__":
    sys.exit(main())
