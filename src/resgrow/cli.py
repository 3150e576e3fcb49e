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
from .errors import DivergedError, ResgrowError, first_line
from .options import floats
from .resume import FREE, differences, refuse, shown


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

    t = sub.add_parser("train", help="train a model (fixed size or with a growth method)")
    t.add_argument("--arch", default=None, help="model name (resnet56, preact_resnet20, wrn16_4, resnet18, ...): the final "
                   "architecture; or package.module:function for a model of your own (fixed size, called with num_classes=N); "
                   "--resume takes the run's")
    t.add_argument("--data", default=None, help="cifar10 | cifar100 | cifar10-sample (2,500 images that ship with resgrow) | path to an ImageFolder directory or zip "
                   "(train/<class>/*, test/<class>/* or val/<class>/*), or Tiny-ImageNet's zip as distributed; --resume takes the run's")
    t.add_argument("--out", required=True, help="run directory (must not exist or be empty, unless --resume)")
    t.add_argument("--method", default=None, help="training method (default: baseline, the fixed-size net; --resume takes the run's)")
    t.add_argument("--epochs", type=int, default=160, help="epochs to train (growth epochs scale with it)")
    t.add_argument("--batch-size", type=int, default=128, help="images per training step")
    t.add_argument("--lr", type=float, default=0.1, help="peak learning rate of SGD")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    t.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=5e-4, help="weight decay (L2, on every parameter)")
    t.add_argument("--schedule", default="cosine", help="lr schedule: constant | step | cosine | cosine_restarts | cosine_reset")
    t.add_argument("--eta-min", type=float, default=0.0, help="lowest lr of the cosine schedules")
    t.add_argument("--warmup", type=float, default=0.0, help="epochs of linear lr warm-up")
    t.add_argument("--milestones", type=floats, default=(), help="step schedule: epochs, e.g. 80,120 (default 50%%,75%%)")
    t.add_argument("--gamma", type=float, default=0.1, help="step schedule: lr factor at each milestone")
    t.add_argument("--restarts", type=floats, default=(), help="cosine_restarts, cosine_reset: epochs, e.g. 60,110")
    t.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
    t.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    t.add_argument("--val-size", type=int, default=0, help="images carved out of train as a validation split")
    t.add_argument("--image-size", type=int, default=None, help="ImageFolder data: bring every image to N x N when decoding "
                   "(shorter side to N, centre crop); needed when the images differ in size")
    t.add_argument("--recipe", default=None, choices=("imagenet",), help="a preset for what the command leaves out: "
                   "imagenet = torchvision's reference ResNet recipe (90 epochs, global batch 256 at lr 0.1, wd 1e-4, lr x0.1 "
                   "at epochs 30 and 60, streamed 224 px random-resized crops)")
    t.add_argument("--stream", action="store_true", help="read the images from their ImageFolder zip or directory as "
                   "training goes (host workers read them; --decode says where they are decoded), for sets that do "
                   "not fit in device memory; --image-size is then the crop size (default 224)")
    t.add_argument("--stream-augment", default="imagenet", choices=("imagenet", "crop"), help="streamed augmentation: "
                   "random-resized crop + flip (imagenet), or pad-4 crop + flip as in memory (crop)")
    t.add_argument("--workers", type=int, default=None, help="streamed data: host processes that read and augment "
                   "images (default min(8, CPUs))")
    t.add_argument("--decode", default=None, choices=("auto", "host", "device"), help="streamed data: where training "
                   "JPEGs are decoded and cropped: on the GPU by torchvision's nvJPEG decoder (device), by the host "
                   "workers (host), or on the GPU where that decoder is at hand (auto, the default)")
    t.add_argument("--eval-every", type=int, default=1, help="evaluate on the test split every N epochs (and after the last)")
    t.add_argument("--eval-batch-size", type=int, default=None, help="images per evaluation batch (default 1000; "
                   "may be changed on --resume: it does not change training)")
    t.add_argument("--checkpoint-every", type=int, default=1, help="write a checkpoint every N epochs (and after the last)")
    t.add_argument("--device", default="auto", help="auto | cuda | cpu | cuda:N")
    t.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation, the data order and augmentation")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint, with the settings it "
                   "started with (only --device, --eval-batch-size, --stop-after, --quiet, --data-dir, --cache-dir and the path of the "
                   "same --data may change)")
    t.add_argument("--stop-after", type=int, default=None, help="stop (resumably) after this epoch, e.g. to fit a job's time limit")
    t.add_argument("--no-graphs", action="store_true", help="run the step eagerly instead of as a CUDA graph")
    t.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 autocast where the device computes bf16 natively (a GPU of compute capability 8.0 on; "
                   "a CPU with AVX-512 BF16 or AMX), fp32 elsewhere; fp32 or bf16 force it (the first line says which)")
    t.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast (as --precision fp32)")
    t.add_argument("--no-channels-last", action="store_true", help="NCHW instead of the channels_last memory layout")
    t.add_argument("--bf16-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="make the bf16 weights with one multi-tensor copy per step instead of autocast's per-layer casts "
                   "(same numbers, fewer kernels per step; on by default wherever bf16 autocast is)")
    t.add_argument("--compile", default="none", help="none | blocks | model: torch.compile inside the captured step "
                   "(experimental; blocks = each residual block, compiled once per distinct block shape)")
    t.add_argument("--data-dir", default="data", help="where cifar10/cifar100 python-format folders live")
    t.add_argument("--cache-dir", default=None, help="where decoded ImageFolder data is cached (default $RESGROW_CACHE or ~/.cache/resgrow)")
    t.add_argument("--quiet", action="store_true", help="no progress output (CI)")
    t.add_argument("--deterministic", action="store_true", help="deterministic GPU kernels: the same seed gives the same "
                   "numbers on the same GPU and software (slower; not for timing)")
    t.add_argument("--tensorboard", action="store_true", help="also log per-epoch scalars to OUT/tb (pip install 'resgrow[tensorboard]')")
    if methods:
        from .methods import all_options

        g = t.add_argument_group("options of the methods (`resgrow methods NAME` for a method's card)")
        for option, names in all_options():
            kind = {"action": argparse.BooleanOptionalAction} if option.type is bool else {"type": option.type}
            g.add_argument(option.flag, dest=option.name, default=None, help=f"{', '.join(names)}: {option.help}", **kind)

    w = sub.add_parser("together", help="train several runs at once in one process (a thread and CUDA stream each), "
                       "to fill a big GPU with small nets; for accuracy, not timing",
                       description="Train several runs at once in one process, each in a thread with its own CUDA stream. "
                       "Each run trains as it would alone, but its training seconds count the others' time too: "
                       "run.json records it (shared_device) and `resgrow compare` marks it. Use it for accuracy "
                       "(seeds, restart baselines), not to time a method.")
    w.add_argument("commands", nargs="+", help="the arguments of each `resgrow train`, quoted as one string per run, "
                   "e.g. \"--arch resnet20 --data cifar10 --seed 0 --out runs/s0\"")

    b = sub.add_parser("bench", help="training throughput: eager fp32 vs the fast path (CUDA)")
    b.add_argument("--arch", default="resnet56", help="registry name, or package.module:function for a model of your own")
    b.add_argument("--batch-size", type=int, default=128, help="images per step")
    b.add_argument("--device", default="auto", help="auto | cuda | cpu | cuda:N (the fast path needs CUDA)")
    b.add_argument("--steps", type=int, default=200, help="timed steps per variant, after a warm-up")
    b.add_argument("--data", default=None, help="real data (ImageFolder dir/zip, cifar10); default: random images of CIFAR size")
    b.add_argument("--data-dir", default="data", help="where cifar10/cifar100 python-format folders live")
    b.add_argument("--json", default=None, help="also write the results to this JSON file")
    b.add_argument("--compile", action="store_true", help="also time the fast path with compiled blocks (--compile blocks); compile time is reported")
    b.add_argument("--h", type=float, default=1.0,
                   help="every block's step size h, as in a grown net (0.25: resnet74 grown twice from 3-3-3); "
                        "also times the default fast path without h folded into the branches")
    b.add_argument("--widths", default=None, metavar="W1-W2-W3",
                   help="the registry net at these stage widths, its stem and inner widths scaled alike (as width "
                        "growth builds them): how fast a narrower net trains on this device")
    e = sub.add_parser("eval", help="evaluate a run's model (its last checkpoint) on a dataset")
    e.add_argument("run", help="run directory (or a checkpoint file)")
    e.add_argument("--data", default=None, help="cifar10 | cifar100 | cifar10-sample | ImageFolder directory or zip (default: the run's own data)")
    e.add_argument("--data-dir", default="data", help="where cifar10/cifar100 python-format folders live")
    e.add_argument("--cache-dir", default=None, help="where decoded ImageFolder data is cached (default $RESGROW_CACHE or ~/.cache/resgrow)")
    e.add_argument("--image-size", type=int, default=None, help="bring ImageFolder images to N x N (default: the run's --image-size)")
    e.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="which split (default test; val exists when the run used --val-size)")
    e.add_argument("--device", default="auto", help="auto | cuda | cpu | cuda:N")
    e.add_argument("--arch", default=None, help="a run of a model of your own: the package.module:function it was trained with")
    e.add_argument("--batch-size", type=int, default=1000, help="images per evaluation batch")
    e.add_argument("--json", default=None, help="also write the result to this JSON file")
    c = sub.add_parser("compare", help="compare finished runs with the first one (accuracy, time, FLOPs, time to accuracy)")
    c.add_argument("runs", nargs="+", help="run directories; the first is the baseline")
    c.add_argument("--gap", type=float, default=0.3,
                   help="time to accuracy: target = the first run's final accuracy minus this many points (default 0.3)")
    c.add_argument("--seeds", action="store_true", help="also one row per group of runs that differ only in a trailing "
                   "_s<seed> (e.g. multilevel_r74_s0, multilevel_r74_s1): mean accuracy and time over the seeds")
    c.add_argument("--plot", default=None, help="also save test accuracy against training seconds and epochs, and model size against training seconds, to this image "
                   "(pip install 'resgrow[plot]')")
    c.add_argument("--frontier", action="store_true", help="hold every run against the fixed-size baseline's "
                   "accuracy-time frontier, from plain baseline runs of the net at several --epochs (seeds averaged): "
                   "the baseline's accuracy at each run's time and its time for each run's accuracy; --plot draws it")
    m = sub.add_parser("models", help="the architecture names --arch takes, with their size")
    m.add_argument("--classes", type=int, default=10, help="classes of the head the sizes are counted for (default 10)")
    k = sub.add_parser("methods", help="the training methods --method takes; with a name, its method card")
    k.add_argument("name", nargs="?", default=None, help="a method: print its card (paper, defaults, options, when it helps)")
    return p


def _models(a) -> int:
    from .models.registry import model_table

    if a.classes < 1:
        raise ResgrowError(f"--classes must be >= 1, not {a.classes}")
    print(f"| arch | block | blocks | widths | shortcut | params ({a.classes} classes) | forward MFLOPs/image |")
    print("|---|---|---|---|---|---|---|")
    for r in model_table(a.classes):
        print(f"| {r['name']} | {r['block']} | {r['blocks']} | {r['widths']} | {r['shortcut']} | {r['params'] / 1e6:.2f}M "
              f"| {r['flops'] / 1e6:,.0f} at {r['image_size']}x{r['image_size']} |")
    print("\nAlso by rule: cifar_resnetD and preact_resnetD (D = 6n+2), wrnD_K (D = 6n+4, widen factor K); "
          "or package.module:function for a model of your own.")
    return 0


def _methods(a) -> int:
    from .methods import METHODS, method_class

    if a.name is not None:
        print(method_class(a.name).card())
        return 0
    for name, cls in sorted(METHODS.items(), key=lambda kv: kv[0] != "baseline"):
        paragraphs = [" ".join(p.split()) for p in cls.card().split("\n\n")]
        lines = [paragraphs[0].removeprefix("Method card: ")]  # whose (the paper), or what for a card without one
        lines += [p.split(". ")[0].rstrip(".") + "." for p in paragraphs if p.startswith("What it does:")]
        lines.append("options: " + (", ".join(o.flag for o in cls.options()) or "none"))
        print(name + "".join(f"\n  {line}" for line in lines))
    print("\n`resgrow methods NAME` prints a method's card.")
    return 0


def _compare(a) -> int:
    from .report.compare import compare_table, load_run, plot_runs, protocol_warnings, seeds_table

    runs = [load_run(d) for d in a.runs]
    if a.frontier:
        return _frontier(a, runs)
    print(compare_table(runs, a.gap))
    if a.seeds:
        print()
        print(seeds_table(runs))
    warnings = protocol_warnings(runs)
    if warnings:
        print()
        for w in warnings:
            print(f"> warning: {w}")
    if a.plot:
        try:
            plot_runs(runs, a.plot, a.gap)
        except ResgrowError as e:  # no matplotlib: the table stands on its own
            print(f"resgrow: no plot: {e}", file=sys.stderr)
            return 0
        print(f"plot: {a.plot}", file=sys.stderr)
    return 0


def _frontier(a, runs) -> int:
    from .report.compare import protocol_warnings
    from .report.frontier import frontier_table, plot_frontier

    print(frontier_table(runs))
    for w in protocol_warnings(runs, skip=("epochs",)):
        print(f"> warning: {w}")
    if a.plot:
        try:
            plot_frontier(runs, a.plot)
        except ResgrowError as e:
            print(f"resgrow: no plot: {e}", file=sys.stderr)
            return 0
        print(f"plot: {a.plot}", file=sys.stderr)
    return 0


def _check_own_model_early(arch: str, method, epochs: int, schedule: str) -> None:
    """A growth method on a model of your own is checked on a build on the meta device (no memory, no data),
    so a wrong --start-blocks fails before the data is decoded; a factory that cannot build there is
    checked on the real model, after the data is read."""
    import torch

    from .models.custom import build_custom
    from .train.trainer import arch_of, check_resizable

    if not method.resizes:
        return
    try:
        with torch.device("meta"):
            model = build_custom(arch, 10)
    except Exception:  # noqa: BLE001 - checked again, with its own error, once the data is known
        return
    check_resizable(method, model)
    method.prepare(arch_of(model), epochs, schedule)


# Not compared with the run's config by `train --resume`: where and how visibly the run goes on (free to
# change), and arch, data, method and its options (checked on their own: by spec, path and method state).
_FREE_ON_RESUME = FREE | {"command", "argv", "arch", "data", "out", "resume", "stop_after", "data_dir", "cache_dir",
                          "method"}
_FLAGS = {"weight_decay": "--wd", "bf16_weights": "--bf16-weights"}


def _take_run_settings(a, stored: dict, source: str) -> None:
    """`train --resume`: what the command leaves out comes from the run; a training setting that
    differs from the run's is refused, since the stored one would silently win."""
    from .data.sources import check_recorded_data

    info, cfg = stored.get("run_info", {}), stored["config"]
    for key in ("arch", "data"):
        if getattr(a, key) is None:
            if not info.get(key):
                raise ResgrowError(f"{source} does not name its --{key}: give it")
            setattr(a, key, info[key])
            if key == "data":
                check_recorded_data(a.data, source)
    name = stored["method"]["name"]
    if a.method not in (None, name):
        raise ResgrowError(f"{source} was trained with method {name!r}, not {a.method!r}")
    a.method = name
    run = dict(cfg, val_size=info.get("val_size", 0), image_size=info.get("image_size"),
               **{f"no_{k}": not cfg[k] for k in ("augment", "amp", "channels_last", "graphs") if k in cfg})
    from .methods import all_options

    defaults = vars(build_parser(methods=True).parse_args(["train", "--out", "-"]))
    free = _FREE_ON_RESUME | {option.name for option, _ in all_options()}
    given = {k: v for k, v in vars(a).items() if k not in free and v != defaults.get(k)}
    refuse(differences(given, run), source, _said)


def _said(key: str, given, had) -> str:
    """A differing training setting as the command line names it (a switch: that the run lacked it)."""
    flag = "--no-bf16-weights" if key == "bf16_weights" and not given else _FLAGS.get(key, "--" + key.replace("_", "-"))
    return f"{flag} (the run was started without it)" if isinstance(given, bool) else f"{flag} {shown(given)} (the run's: {shown(had)})"


def _check_method_settings(a, method, stored: dict, source: str) -> None:
    """Method options given with --resume must be the run's; the method then holds the run's values
    (so its progress line shows them; the trainer reloads its whole state later)."""
    given = {k: v for k, v in method.settings().items() if getattr(a, k, None) is not None}  # as the method parsed them
    method.load_state_dict(stored["method"]["state"])
    refuse(differences(given, method.settings()), source,
           lambda k, v, had: f"--{k.replace('_', '-')} {shown(v)} (the run's: {shown(had)})")


def _train(a) -> int:
    trainer = _prepare_train(a)
    try:
        with _stop_on_signals([trainer]) as stop:
            rows = trainer.fit(until=a.stop_after)
        return _report(trainer, rows, stop.signal)
    finally:
        trainer.ranks.close()


def _prepare_train(a, label: str = ""):
    """Everything `resgrow train` does before the first epoch: checks (before any data is read), the
    data, the model, the trainer; prints the run's header line."""
    import torch

    from .data.sources import data_source, load_dataset
    from .methods import all_options, build_method
    from .methods.base import DataCheck
    from .models.custom import build_model, is_custom, model_factory
    from .models.resnet import ResNet
    from .models.registry import spec_for
    from .train.checkpoint import load_run_checkpoint
    from .train.compile import check_compile
    from .train.schedules import check_schedule
    from .train.device import precision_note, resolve_device
    from .train.run_dir import check_run_dir
    from .train.trainer import TrainConfig, Trainer

    out, stored = Path(a.out), None
    if a.recipe and not a.resume:
        _apply_recipe(a)
    if a.resume:  # the run's own settings first: the command may leave them out
        check_run_dir(out, True)
        stored, source = load_run_checkpoint(out)  # refuses a corrupt or tampered file up front
        source = f"checkpoint {source}"
        _take_run_settings(a, stored, source)
    elif a.arch is None or a.data is None:
        raise ResgrowError("the following arguments are required: " + ", ".join(
            f"--{k}" for k in ("arch", "data") if getattr(a, k) is None) + " (only --resume may leave them out)")
    method = build_method(a.method or "baseline", **{o.name: getattr(a, o.name, None) for o, _ in all_options()})
    if a.resume:
        _check_method_settings(a, method, stored, source)
    # Bad input fails here, before any data is loaded.
    check_schedule(a.schedule)
    check_compile(a.compile)
    if is_custom(a.arch):
        model_factory(a.arch)  # importable, before any data is read
        if not a.resume:
            _check_own_model_early(a.arch, method, a.epochs, a.schedule)
    elif not a.resume:
        method.prepare(spec_for(a.arch), a.epochs, a.schedule)
    else:
        spec_for(a.arch)
    if not a.resume and isinstance(method, DataCheck):
        method.check_data(data_source(a.data))
    if a.bf16_weights and a.no_amp:
        raise ResgrowError("bf16 weight copies (--bf16-weights) stand in for autocast's casts, so they need bf16 "
                           "autocast: drop --no-amp or --bf16-weights")
    if a.stop_after is not None and a.stop_after < 1:
        raise ResgrowError(f"--stop-after must be an epoch >= 1, not {a.stop_after}")
    ranks = _join_ranks(a.device)
    if ranks.main:  # rank 0 alone: the others would find the directory it has just begun to write
        check_run_dir(out, a.resume)
    if a.resume:
        cfg = TrainConfig.from_dict(stored["config"])
        cfg.device, cfg.quiet = a.device, a.quiet
        cfg.workers = a.workers if a.workers is not None else cfg.workers  # the same batches with any number
        cfg.eval_batch_size = cfg.eval_batch_size if a.eval_batch_size is None else a.eval_batch_size
        info = stored.get("run_info", {})
        # data moved, or named from another directory: the trainer checks that it holds the same images
        # (classes, size, pixel statistics); a checkpoint too old to store them must name the same path
        if info.get("data") not in (None, a.data, data_source(a.data)) and not stored.get("data_cfg"):
            raise ResgrowError(f"checkpoint in {out} was trained on data {info['data']!r}, not {a.data!r}")
    else:
        cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, momentum=a.momentum, nesterov=a.nesterov,
                          weight_decay=a.weight_decay, schedule=a.schedule, eta_min=a.eta_min, warmup=a.warmup,
                          milestones=a.milestones, gamma=a.gamma, restarts=a.restarts, label_smoothing=a.label_smoothing,
                          augment=not a.no_augment, eval_every=a.eval_every, checkpoint_every=a.checkpoint_every,
                          eval_batch_size=TrainConfig.eval_batch_size if a.eval_batch_size is None else a.eval_batch_size,
                          device=a.device, amp=not a.no_amp, precision=a.precision, channels_last=not a.no_channels_last, graphs=not a.no_graphs,
                          bf16_weights=a.bf16_weights is not False, compile=a.compile, seed=a.seed, quiet=a.quiet,
                          tensorboard=a.tensorboard, deterministic=a.deterministic, workers=a.workers)
    if not a.resume:  # a stored config trained once already: a newer rule must not strand its run
        cfg.validate()  # before the data is read
    elif cfg.eval_batch_size < 1:
        raise ResgrowError(f"--eval-batch-size must be >= 1, not {cfg.eval_batch_size}")
    device = resolve_device(cfg.device)
    if ranks.several:
        cfg.quiet = cfg.quiet or not ranks.main
        if device.type == "cuda":
            cfg.device = f"cuda:{ranks.local_rank}"
    stored_info = dict(stored.get("run_info", {}), data=data_source(a.data)) if a.resume else {}  # where the data is now
    val_size = stored_info.get("val_size", 0) if a.resume else a.val_size
    image_size = stored_info.get("image_size") if a.resume else a.image_size
    stream = stored_info.get("stream") if a.resume else (
        {"augment": a.stream_augment, "decode": a.decode or "auto"} if a.stream else None)
    if stream is not None:
        from .data.stream import open_stream, resolve_decode

        if val_size:
            raise ResgrowError("--val-size carves a split out of images in memory; a streamed set takes its test/ or val/")
        decode = stream.get("decode", "host")  # runs streamed before --decode existed decoded on the host
        if a.resume and a.decode not in (None, decode):
            raise ResgrowError(f"a resumed run keeps the settings it started with; drop --decode {a.decode} "
                               f"(the run's: {decode})")
        if decode == "device":
            resolve_decode(decode, stream["augment"], device)  # one line now, not after the data is read
        data = open_stream(a.data, image_size or 224, stream["augment"], decode)
    elif a.decode is not None:
        raise ResgrowError("--decode applies to streamed data (--stream)")
    else:
        data = load_dataset(a.data, root=a.data_dir, cache_dir=a.cache_dir, val_size=val_size, seed=cfg.seed,
                            progress=not a.quiet, image_size=image_size)
    torch.manual_seed(cfg.seed)
    model = build_model(a.arch, data.num_classes)
    if is_custom(a.arch) and isinstance(model, ResNet) and not a.resume:
        method.prepare(model.spec, cfg.epochs, cfg.schedule)  # before the run dir; a non-ResNet: the Trainer says
    info = stored_info or {"arch": a.arch, "data": data_source(a.data), "val_size": a.val_size, "image_size": a.image_size,
                           "stream": stream, "command": shlex.join(["resgrow", *getattr(a, "argv", sys.argv[1:])])}
    trainer = Trainer(model, data, cfg, method, out=out, resume=a.resume, run_info=info, ranks=ranks)
    if ranks.several and ranks.main:
        print(f"{label}resgrow: {ranks.world} processes x batch {cfg.batch_size} = global batch "
              f"{ranks.world * cfg.batch_size} (lr {cfg.lr:g} as given)", file=sys.stderr)
    if not cfg.quiet:
        print(f"{label}resgrow {__version__}: {a.arch} on {data.summary()}; {trainer.device}, method {method.describe()}; "
              f"precision {precision_note(trainer.amp, trainer.device)}, layout {trainer.layout_note}, "
              f"cuda graphs {trainer.use_graphs}"
              f"{', bf16 weight copies' if trainer.runner.lowp is not None else ''}", file=sys.stderr)
    return trainer


def _report(trainer, rows, sig: int = signal.SIGTERM) -> int:
    """The run's last line: where it stopped and how to go on, or its final accuracy; the exit code.
    `sig`: the signal that asked the run to stop, if it did. Several processes: rank 0 says it."""
    cfg, out = trainer.cfg, trainer.out
    if not trainer.ranks.main:
        return 128 + sig if trainer.stop_requested and trainer.epoch < cfg.epochs else 0
    if trainer.stop_requested and trainer.epoch < cfg.epochs:
        print(f"resgrow: stopped on {signal.Signals(sig).name} after epoch {trainer.epoch}/{cfg.epochs}; checkpoint written "
              f"(continue with: {_resume_command(out)})", file=sys.stderr)
        return 128 + sig
    last = rows[-1] if rows else {}
    if trainer.epoch < cfg.epochs:  # --stop-after
        acc = f"test accuracy {last['test_acc']:.2%}, " if "test_acc" in last else ""
        print(f"stopped after epoch {trainer.epoch}/{cfg.epochs} (--stop-after): {acc}training time "
              f"{trainer.train_seconds:.1f}s; continue with: {_resume_command(out)}")
    elif "test_acc" in last:
        print(f"final epoch {last['epoch']}: test accuracy {last['test_acc']:.2%}, training time {last['train_seconds']:.1f}s; run in {out}")
    return 0


def _together(a) -> int:
    """Several `resgrow train` commands in one process, each in a thread with its own CUDA stream (train/together.py)."""
    from .train.together import check_together, fit_together

    if len(a.commands) < 2:
        raise ResgrowError("together needs at least two quoted train commands, e.g. "
                           "resgrow together \"--arch resnet20 --data cifar10 --seed 0 --out runs/s0\" \"... --seed 1 --out runs/s1\"")
    parsed = []
    for text in a.commands:
        argv = shlex.split(text)
        if argv[:1] == ["train"]:
            argv = argv[1:]
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


# torchvision's classification reference for ResNets: SGD lr 0.1 at global batch 256 (8 GPUs x 32), momentum 0.9,
# wd 1e-4, 90 epochs, lr x0.1 every 30; random-resized 224 px crops + flip, resize 256 + centre crop for evaluation.
IMAGENET_RECIPE = {"epochs": 90, "weight_decay": 1e-4, "schedule": "step", "gamma": 0.1, "image_size": 224,
                   "stream": True, "stream_augment": "imagenet"}
IMAGENET_BATCH, IMAGENET_LR = 256, 0.1


def _apply_recipe(a) -> None:
    """--recipe imagenet: the reference's values for every setting the command does not give."""
    argv = list(getattr(a, "argv", None) or sys.argv[1:])
    given = {t.split("=")[0][2:].replace("-", "_") for t in argv if t.startswith("--")}
    given |= {"weight_decay"} if "wd" in given else set()
    for key, value in IMAGENET_RECIPE.items():
        if key not in given:
            setattr(a, key, value)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "batch_size" not in given:
        a.batch_size = max(1, IMAGENET_BATCH // world)
    if "lr" not in given:  # the linear scaling rule for another global batch
        a.lr = IMAGENET_LR * a.batch_size * world / IMAGENET_BATCH
    if "milestones" not in given:
        a.milestones = (round(a.epochs / 3), round(2 * a.epochs / 3))


def _join_ranks(device: str):
    """This process's place among torchrun's processes (a single process without torchrun)."""
    from .train.device import resolve_device
    from .train.distributed import Ranks, launched

    return Ranks.from_env(resolve_device(device).type) if launched() else Ranks()


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


def _eval(a) -> int:
    from .train.saved import evaluate_run

    if a.batch_size < 1:
        raise ResgrowError(f"--batch-size must be >= 1, not {a.batch_size}")

    r = evaluate_run(a.run, a.data, a.split, a.device, a.data_dir, a.cache_dir, a.image_size, a.batch_size, arch=a.arch)
    print(f"{r['split']} accuracy {r['acc']:.2%} (loss {r['loss']:.4f}) on {r['images']} images of {r['dataset']}; "
          f"model of epoch {r['epoch']}/{r['epochs'] or '?'}, "
          + (f"blocks {r['blocks']}, widths {r['widths']}" if "blocks" in r else r["model"]))
    if a.json:
        Path(a.json).write_text(json.dumps(dict(r, run=str(a.run)), indent=2) + "\n")
    return 0


def _bench_spec(a):
    """The net `resgrow bench` times: None for a model of the user's own (checked here), else the registry's
    ArchSpec, at --widths if given."""
    from .grow.width import wider_spec
    from .models.custom import is_custom, model_factory
    from .models.registry import spec_for

    if is_custom(a.arch):
        model_factory(a.arch)
        if a.h != 1 or a.widths is not None:
            raise ResgrowError(f"{'--h' if a.h != 1 else '--widths'} sets the {'step size' if a.h != 1 else 'widths'} "
                               "of resgrow's residual blocks; use it with a registry --arch")
        return None
    spec = spec_for(a.arch)
    if a.widths is None:
        return spec
    try:
        widths = tuple(int(w) for w in a.widths.split("-"))
    except ValueError:
        raise ResgrowError(f"--widths must look like 16-32-64, not {a.widths!r}") from None
    if min(widths) < 1:
        raise ResgrowError(f"--widths must be positive, not {a.widths!r}")
    return wider_spec(spec, widths)


def _bench(a) -> int:
    from .bench import bench, format_results, synthetic_split, train_default
    from .data.sources import load_dataset
    from .models.registry import build
    from .train.device import resolve_device

    if a.steps < 1 or a.batch_size < 1:
        raise ResgrowError(f"--steps and --batch-size must be >= 1 (got {a.steps}, {a.batch_size})")
    if not 0 < a.h <= 1:
        raise ResgrowError(f"--h must be in (0, 1] (got {a.h:g})")
    spec = _bench_spec(a)
    device = resolve_device(a.device)
    if a.data:
        ds = load_dataset(a.data, root=a.data_dir)
        split, classes, src = ds.train, ds.num_classes, ds.name
    else:
        split, classes, src = synthetic_split(), 10, "random uint8 images"
    narrowed = spec if a.widths is not None else None
    results = bench(a.arch, a.batch_size, device, split, classes, steps=a.steps, compile_blocks=a.compile, h=a.h,
                    spec=narrowed)
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    label = f"{a.arch} at {narrowed.widths_str()} (stem {narrowed.stem_width})" if narrowed else a.arch
    default = train_default(device, build(spec) if spec is not None else None)
    print(format_results(label, a.batch_size, f"{name} ({src})", results, a.h, default))
    if device.type != "cuda":
        from .train.device import cpu_bf16_flags, cpu_name

        flags = cpu_bf16_flags()
        print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}: "
              f"{'native bf16 (' + ', '.join(flags) + ')' if flags else 'no native bf16: bf16 is emulated'}; "
              "CUDA graphs need a GPU")
    if a.json:
        Path(a.json).write_text(json.dumps({"arch": a.arch, "widths": a.widths, "batch_size": a.batch_size, "device": name, "data": src,
                                            "h": a.h, "results": results}, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    a = None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if not argv:  # `resgrow` alone: what it can do
            build_parser().print_help(sys.stderr)
            return 2
        a = build_parser(methods=argv[0] in ("train", "together")).parse_args(argv)
        a.argv = argv  # run.json's command: the one given, also from Python
        return {"train": _train, "together": _together, "bench": _bench, "compare": _compare, "eval": _eval, "models": _models,
                "methods": _methods}[a.command](a)
    except BrokenPipeError:  # `resgrow compare ... | head` closed our stdout: it has read all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail again
        return 128 + 13  # as a command that SIGPIPE ended
    except (ResgrowError, OSError, RuntimeError, KeyboardInterrupt) as e:
        code = _report_error(e, kept=_interrupted_runs(a) if isinstance(e, KeyboardInterrupt) else "")
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


def _interrupted_runs(a) -> str:
    command = getattr(a, "command", None)
    if command == "train":
        return _kept(a.out)
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
        print(f"resgrow: error: {where}{said} Try a smaller --batch-size or --image-size (a new run), or --eval-batch-size "
              "(also with --resume); the last checkpoint, if any, is kept", file=sys.stderr)
        return 2
    return None

if __name__ == "__main__":
    sys.exit(main())
