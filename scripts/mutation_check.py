"""Do the tests catch a broken rule? Break one rule at a time in the source, run the tests that should
notice, and say which breakages survived (a surviving one is a rule no test checks).

Each mutation replaces one exact piece of source text (it must occur once: when the code changes, the
script says which entry is stale). The source is restored after every run, also on Ctrl-C, SIGTERM or SIGHUP;
after a SIGKILL (a lost machine), by the next run of this script, from `.mutation_backup`.

    python scripts/mutation_check.py          # all (about an hour on 2 cores)
    python scripts/mutation_check.py 3 7      # only entries 3 and 7
    python scripts/mutation_check.py --list

The tests read their data as always (the shipped sample, or RESGROW_TEST_DATA). First it runs the chosen
entries' tests unmutated: a red suite would make every entry look caught. Every entry is expected to be
caught; one that survives names a rule that needs a test.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROW = "tests/test_grow.py tests/test_trainer.py"
ALL = "tests"
# -x: the first failure is enough to call an entry caught; -n auto: the suite's own split over the cores
PYTEST = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n", "auto"]

# (file under src/resgrow, exact old text, new text, tests to run)
MUTATIONS = [
    # depth operators
    ("grow/depth.py", 'factor = 1.0 if mode == "identity" else 0.5', "factor = 1.0", GROW),
    ("grow/depth.py", "new_sd[key] = old_sd[old_key].clone()",
     'new_sd[key] = old_sd[old_key].clone() if "running" not in key else new_sd[key]', GROW),
    ("grow/depth.py", "plan.append((i, i + 1, True))", "plan.append((i, None, True))", GROW),
    ("grow/depth.py", "return {int((j + 0.5) * n / extra) for j in range(extra)}", "return set(range(extra))", GROW),
    ("grow/depth.py", "(factor if home in split else 1.0)", "factor", GROW),
    ("grow/depth.py", 'if is_new and (mode == "identity" or src is None):', "if is_new and src is None:", GROW),
    ("grow/depth.py", 'mapping.pop(f"stages.{s}.blocks.{j}.{pname}", None)', "pass", GROW),
    ("grow/depth.py", "new.train(model.training)", "new.train(True)", GROW),
    # optimizer state across a size change
    ("train/optim.py", "buf = fn(value) if fn else value", "buf = torch.zeros_like(value)", GROW),
    ("train/optim.py", ".contiguous(memory_format=_format_of(p)).clone(\n                memory_format=torch.preserve_format)",
     ".contiguous(memory_format=_format_of(p))", GROW),
    ("train/optim.py", "                state[key].copy_(value)\n", "                pass\n", "tests/test_adamw.py"),
    ("train/groups.py", "        torch._foreach_copy_(self._params, self._before)",
     "        pass", "tests/test_adamw.py"),
    # the ViT family: its operators and its Lipschitz bound
    ("grow/vit.py", "        w_out[:, first + size: first + 2 * size] = -w_out[:, first: first + size]",
     "        w_out[:, first + size: first + 2 * size] = w_out[:, first: first + size]", "tests/test_vit.py"),
    ("grow/vit.py", "    factor = 0.5 if mode in (\"interpolate\", \"duplicate\") else 1.0",
     "    factor = 1.0", "tests/test_vit.py"),
    ("measure/lipschitz.py", "    parts[:, 1] *= GELU_SLOPE\n", "", "tests/test_vit.py"),
    ("train/optim.py", "weight_decay=weight_decay, nesterov=nesterov, **kw)", "weight_decay=weight_decay, nesterov=False, **kw)", GROW),
    # LipGrow's rule and the Lipschitz measure
    ("methods/lipgrow.py", "ratio > self.threshold:", "ratio >= self.threshold:", GROW),
    ("methods/lipgrow.py", "min(self.window + 1, (self.epochs", "min(self.window, (self.epochs", GROW),
    ("methods/lipgrow.py", "return min(self.window + 1, (self.epochs - self.reserve) // self.total)", "return self.window + 1", GROW),
    ("methods/lipgrow.py", "self.scores, self.l0 = [], None", "self.l0 = None", GROW),
    ("methods/lipgrow.py", "reserve = max(1, round(30 * epochs / 164))", "reserve = max(1, round(30 * epochs / 160))", GROW),
    ("methods/lipgrow.py", "smoothed = sum(self.scores[-self.window:]) / self.window", "smoothed = self.scores[-1]", GROW),
    ("methods/lipgrow.py", "ctx.schedule.add_restart(ctx.epoch, reset=True)", "pass", GROW),
    ("methods/lipgrow.py", "ctx.schedule.add_restart(ctx.epoch, reset=True)", "ctx.schedule.add_restart(ctx.epoch)", GROW),
    ("train/schedules.py", 'elif self.kind == "cosine_restarts":', "else:", ALL),
    ("measure/lipschitz.py", "bound = h\n", "bound = 1.0\n", GROW),
    ("measure/lipschitz.py", "(gamma.abs() / var.sqrt())", "(gamma.abs() / var)", GROW),
    ("measure/lipschitz.py", "return sum(bounds) / len(bounds)", "return max(bounds)", GROW),
    ("measure/lipschitz.py", "self.vectors[new_name] = old[src]", "pass", GROW),
    ("measure/lipschitz.py", "self.iters if group[4] else self.cold_iters", "self.iters", GROW),
    # multilevel and the growth record
    ("methods/depth.py", "first = 0.375", "first = 0.4", GROW),
    ("methods/multilevel.py", "ctx.schedule.add_restart(e)", "pass", GROW),
    ("methods/depth.py", 'self.k, self.grows = state["k"], list(state["grows"])', 'self.k, self.grows = state["k"], []', GROW),
    ("methods/depth.py", 'self.final_blocks = tuple(state["final_blocks"]) if state["final_blocks"] else None',
     "self.final_blocks = None", GROW),
    ("methods/depth.py", "spec.blocks, self.final_blocks) if self.final_blocks else None", "spec.blocks, self.final_blocks) if False else None", GROW),
    ("methods/depth.py", "return tuple(-(-f // 4) for f in final)", "return tuple(max(1, f // 4) for f in final)", GROW),
    # schedules
    ("train/schedules.py", "                    start = r\n", "                    start = 0.0\n", ALL),
    ("train/schedules.py", "frac = (t - start) / (end - start)", "frac = t / self.epochs", ALL),
    ("train/schedules.py", "lr *= (t + 1e-8) / self.warmup", "lr *= 1.0", ALL),
    ("train/schedules.py", 'self.kind, self.restarts = d["kind"], [float(r) for r in d["restarts"]]',
     'self.restarts = [float(r) for r in d["restarts"]]', ALL),
    # data
    ("data/loader.py", "torch.where(flip, self.w - 1 - self.cols, self.cols)", "self.cols", ALL),
    ("data/loader.py", "rows = off[:, :1] + self.rows", "rows = self.pad + self.rows", ALL),
    ("data/loader.py", "manual_seed(epoch_seed(self.seed, epoch))", "manual_seed(epoch_seed(self.seed, 0))", ALL),
    ("data/loader.py", "return self.normalize(x), self.labels[idx]", "return self.normalize(x), self.labels[idx].roll(1)", ALL),
    ("data/loader.py", "        self.flips.copy_(shard(flips).view_as(self.flips))\n        self.step.zero_()\n",
     "        self.flips.copy_(shard(flips).view_as(self.flips))\n", ALL),
    ("data/sources.py", 'f"{path.resolve()}|{_fingerprint(path)}|{CACHE_VERSION}{sized}"', 'f"{path.resolve()}|{CACHE_VERSION}{sized}"',
     "tests/test_data.py"),
    ("data/sources.py", 'sized = f"|{image_size}" if image_size else ""', 'sized = ""', "tests/test_data.py"),
    ("data/sources.py", 'return f"{st.st_size}|{st.st_mtime_ns}"', 'return f"{st.st_size}"', "tests/test_data.py"),
    # the step, evaluation and the bf16 weights with h folded in
    ("train/step.py", "loss = F.cross_entropy(out, y, label_smoothing=self.label_smoothing)", "loss = F.cross_entropy(out, y)", ALL),
    ("train/evaluation.py", 'F.cross_entropy(out.float(), y, reduction="sum")', 'F.cross_entropy(out.float(), y, reduction="mean")', ALL),
    ("train/evaluation.py", '    model.train(was_training)\n', "", ALL),
    ("train/bf16_weights.py", "torch._foreach_mul_([g for g, _ in pairs], [h for _, h in pairs])", "pass", "tests/test_trainer.py"),
    ("train/bf16_weights.py", "torch._foreach_mul_(self.low_scaled, self.low_h)", "pass", "tests/test_trainer.py"),
    # the trainer's clock, resume and run directory
    ("train/trainer.py", '        self.train_seconds += row["method_seconds"]\n', "", GROW),
    ("train/trainer.py", "        self.train_seconds += time.perf_counter() - t0\n        self._pending_events",
     "        self._pending_events", GROW),
    ("train/trainer.py", '        self.run_dir.truncate(self.epoch)\n', "", ALL),
    ("train/trainer.py", '        torch.set_rng_state(checkpoint["rng"]["cpu"])\n', "", ALL),
    ("train/trainer.py", '            row.update({f"after_{k}": v for k, v in self._size.items()})\n', "", ALL),
    ("train/run_dir.py", "elif out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()) and not never_trained(out):", "elif False:", ALL),
    ("train/trainer.py", "self.epoch == self._stop_at or self.stop_requested:", "self.epoch == self._stop_at:", ALL),
    ("train/trainer.py", "self.epoch == self._stop_at or", "self.epoch == cfg.epochs or", ALL),
    ("resume.py", "and normalized(value) != normalized(run[key])", "and False", "tests/test_cli.py tests/test_resume.py"),
    ("train/trainer.py", "            check_resume(self.cfg, self.method, checkpoint, source)\n", "", "tests/test_resume.py"),
    ("train/trainer.py", "self._install(model, method_groups=not resume)", "self._install(model)", "tests/test_resume.py"),
    ("launch.py", 'info = dict(stored.get("run_info", {}), data=data_source(req.data))', 'info = dict(stored.get("run_info", {}))',
     "tests/test_cli.py"),
    ("train/run_lock.py", "            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n", "            pass\n", ALL),
    ("train/checkpoint.py", "weights_only=True)", "weights_only=False)", "tests/test_trainer.py"),
    ("train/checkpoint.py", "        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())\n", "", ALL),
    ("report/metrics.py", 'keep = [r for r in self.rows(partial_tail=True) if r["epoch"] <= last_epoch]',
     "keep = [r for r in self.rows(partial_tail=True)]", ALL),
    ("atomic.py", "        os.replace(tmp, path)\n", "        pass\n", ALL),
    # runs trained together (threads): they overlap, say so in run.json, and compare warns
    ("train/together.py", "        th.start()\n    for th in threads:\n", "        th.start()\n        th.join()\n    for th in threads:\n",
     "tests/test_together.py"),
    ("train/trainer.py", '            self.run_dir.update_info(shared_device=self.run_info["shared_device"])', '            pass',
     "tests/test_together.py"),
    ("train/together.py", '        t.run_info["shared_device"] = sorted(', '        t.run_info["not_shared"] = sorted(', "tests/test_together.py"),
    ("report/compare.py", 'for r in runs if r.info is not None and (shared := r.info.get("shared_device"))]',
     "for r in runs if False]", "tests/test_together.py"),
    ("report/compare.py", "len(r.steady_epochs) >= STEADY_NEEDED and not r.shared:", "len(r.steady_epochs) >= STEADY_NEEDED:",
     "tests/test_compare.py"),
    ("report/compare.py", 'ratio = "-" if r.shared or base.shared else', 'ratio = "-" if r.shared else', "tests/test_together.py"),
    ("report/compare.py", 'ratio = "-" if shared or any(r.shared for r in base) else', 'ratio = "-" if False else',
     "tests/test_together.py"),
    ("measure/lipschitz.py", '        with self.lock:\n            tuned', '        if True:\n            tuned', "tests/test_together.py"),
    ("report/compare.py", "for ax, i in ((axes[1], 1),) if r.shared else zip(axes, (0, 1)):", "for ax, i in zip(axes, (0, 1)):",
     "tests/test_compare.py"),
    ("cli.py", "    with _stop_on_signals(trainers) as stop:\n        results = fit_together(trainers, until=stops.pop())",
     "    with _stop_on_signals(trainers) as stop:\n        results = fit_together(trainers)", "tests/test_together.py"),
    # ImageFolder layouts: images in subfolders of a class, val/ as the test split, file managers' junk
    ("data/sources.py", "if len(parts) >= prefix_len + 3 and parts[prefix_len] in out:",
     "if len(parts) == prefix_len + 3 and parts[prefix_len] in out:", "tests/test_data.py"),
    ("data/sources.py", 'folder = "test" if out["test"] else "val"', 'folder = "test"', "tests/test_data.py"),
    ("data/sources.py", 'p.startswith(".") or p in OS_JUNK', 'p.startswith(".") or p == "__MACOSX"', "tests/test_data.py"),
    # a run stopped before its first epoch ended may start again; anything more is kept
    ("train/run_dir.py", 'return isinstance(info, dict) and {"config", "method", "torch"} <= set(info)', "return True",
     "tests/test_trainer.py"),
    ("train/run_dir.py", "and not never_trained(out):", ":", "tests/test_trainer.py tests/test_cli.py"),
    # a model of the user's own: checked on one image without touching its BN statistics
    ("measure/flops.py", "    model.eval()\n    try:\n        with torch.no_grad(), FlopCounterMode", "    try:\n        with torch.no_grad(), FlopCounterMode",
     "tests/test_trainer.py"),
    ("data/sources.py", ' or p[-1] == f"{p[1]}_boxes.txt":', ":", "tests/test_data.py"),
    ("data/sources.py", "val.append((labels[p[2]], n))", "val.append((p[1], n))", "tests/test_data.py"),
    ("data/sources.py", 'if any(p[0] == "test" and (len(p) != 3 or p[1] != "images") for p, _ in rel):', "if False:",
     "tests/test_data.py"),
    ("data/sources.py", 'if _unlabelled(out["test"], out["train"]) and out["val"]:', "if False:", "tests/test_data.py"),
    ("data/sources.py", '(train if p[0] == "train" else val).append((p[1], n))', 'train.append((p[1], n)) if p[0] == "train" else None',
     "tests/test_data.py"),
    ("train/run_lock.py", "if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):", "if False:",
     "tests/test_trainer.py"),
    ("train/device.py", 'native = major >= 8 or bool(torch.version.hip)', 'native = True', "tests/test_trainer.py"),
    ("train/device.py", "native, what = bool(cpu_bf16_flags())", "native, what = True", "tests/test_cpu_precision.py"),
    ("train/device.py", "return all(m.num_features % CPU_CHANNELS_LAST_MULTIPLE == 0 for m in model.modules()",
     "return all(True for m in model.modules()", "tests/test_cpu_precision.py tests/test_bench.py"),
    ("train/device.py", 'return device.type == "cpu" and NCHW_AT_ODD_WIDTHS_FLAG in cpu_bf16_flags()',
     'return device.type == "cpu"', "tests/test_cpu_precision.py"),
    ("train/trainer.py", "loader.normalize.channels_last = self.layout_channels_last",
     "loader.normalize.channels_last = self.channels_last", "tests/test_cpu_precision.py"),
    ("bench.py", "model = (build(spec) if spec is not None else build_model(arch, num_classes)).to(device)",
     "model = build_model(arch, num_classes).to(device)", "tests/test_bench.py"),
    ("train/device.py", "return [f for f in NATIVE_BF16_FLAGS if f in flags]", "return list(NATIVE_BF16_FLAGS)",
     "tests/test_cpu_precision.py"),
    ("train/trainer.py", 'self.amp = checkpoint["bf16"]', "pass", "tests/test_cpu_precision.py"),
    ("train/distributed.py", "            _import_before_the_group()\n", "", "tests/test_distributed.py"),
    ("train/trainer.py", "last = self.checkpoint_epoch  #", "last = self.epoch - 1  #", "tests/test_trainer.py"),
    ("models/custom.py", "    if shape != (batch, num_classes):", "    if len(shape) != 2:", "tests/test_trainer.py"),
    ("models/custom.py", '    out, draws = run(_train_forward, "fails in train mode on")', "    out, draws = torch.zeros(2, num_classes), True",
     "tests/test_trainer.py"),
    ("models/custom.py", "return out, any(not torch.equal(a, b)", "return out, isinstance(model, nn.Sequential) and any(not torch.equal(a, b)",
     "tests/test_together.py"),
    ("models/custom.py", "                    b.copy_(saved[k])", "                    pass", "tests/test_trainer.py"),
    ("models/custom.py", "torch.no_grad(), torch.random.fork_rng(devices=devices):", "torch.no_grad():", "tests/test_trainer.py"),
    # the first line names a default start; a closed pipe ends quietly
    ("methods/base.py", "        self.filled = set(self.filled) | set(unset)\n", "", GROW),
    ("methods/multilevel.py", "        self.fill(grow_at=tuple(at))\n", "", GROW),
    ("cli.py", "        return 128 + 13  # as a command that SIGPIPE ended", "        raise", "tests/test_cli.py"),
    ("train/run_lock.py", "if fd is None or _still_at(fd, self.path):", "if True:", "tests/test_trainer.py"),
    ("train/evaluation.py", '        with self.lock:\n            row["test_loss"]', '        if True:\n            row["test_loss"]', "tests/test_together.py"),
    # comparisons
    ("report/compare.py", 'r["test_acc"] >= target:', 'r["test_acc"] > target:', "tests/test_compare.py"),
    ("report/compare.py", "if size(r) == size(prev) == size(self.log[-1])", "if size(r) == size(self.log[-1])", "tests/test_compare.py"),
    ("report/compare.py", 'return info.get("gpu") or info.get("cpu") or info.get("device")',
     'return info.get("gpu") or info.get("device")', "tests/test_compare.py"),
    # runs timed on different machines: the epoch clock, a resume on another machine
    ("report/compare.py", 'and abs(r.get("grad_equivalents", r["steps"]) - r["steps"]) <= 1e-3 * r["steps"]]', "]",
     "tests/test_compare.py"),
    ("cli.py", 'return ("device", "speed") if args.clock == "epochs" else ()', "return ()", "tests/test_compare.py"),
    ("train/run_dir.py", "if all(history[-1].get(k) == v for k, v in machine.items()):", "if False:", "tests/test_cli.py"),
    ("report/compare.py", "for r in runs if len(r.machines) > 1]", "for r in runs if len(r.machines) > 2]",
     "tests/test_cli.py"),
    ("report/compare.py", "    if len(timed) >= 2 and unchecked:", "    if False:", "tests/test_compare.py"),
    # what a new user hits: data paths recorded absolute, the checkpoint before the last, a bar in a log
    ("data/sources.py", "    return str(Path(name).expanduser().resolve())", "    return name", "tests/test_cli.py tests/test_data.py"),
    ("train/run_dir.py", 'save_checkpoint(state, self.path / CHECKPOINT, keep=PREVIOUS)', 'save_checkpoint(state, self.path / CHECKPOINT)', "tests/test_cli.py"),
    ("train/checkpoint.py", "        if not previous.is_file():\n            raise", "        if True:\n            raise", "tests/test_cli.py"),
    ("train/run_dir.py", "        if not out.exists():\n            raise ResgrowError(f\"cannot resume",
     "        if False:\n            raise ResgrowError(f\"cannot resume", "tests/test_cli.py"),
    ("data/sources.py", "    if progress and sys.stderr.isatty():", "    if progress:", "tests/test_data.py"),
    ("measure/flops.py", 'fan_in = m.in_channels // m.groups * math.prod(m.kernel_size)', 'fan_in = m.in_channels',
     "tests/test_models.py"),
    # the open method interface: events with kinds, options and report columns declared by the method
    ("events.py", 'return event(GROW if e.startswith("grew ") else "note", e)', 'return event("note", e)', "tests/test_compare.py"),
    ("report/compare.py", "extra = list({c.title: c for r in runs for c in r.columns}.values())", "extra = []",
     "tests/test_compare.py"),
    ("methods/base.py", 'options = "".join(f"\\n  {o.flag}: {o.help}" for o in cls.options())', 'options = ""', "tests/test_cli.py"),
    # the step a method shapes: groups, element masks, batch size
    ("train/groups.py", "torch.mul(lr, self._scales, out=self._lrs)", "self._lrs.copy_(self._scales)", "tests/test_method_step.py"),
    ("train/groups.py", "p.register_hook(lambda grad, mask=self._masks[name]: grad * mask)", "pass", "tests/test_method_step.py"),
    ("train/trainer.py", "lr = self.schedule(e + i / steps) * factor", "lr = self.schedule(e + i / steps)",
     "tests/test_widen_method.py"),
    ("train/trainer.py", '            self.loader.resize(checkpoint["batch_size"])', "            pass", "tests/test_widen_method.py"),
    # width growth
    ("grow/width.py", "        w[:, b] = -w[:, a]", "        w[:, b] = w[:, a]", "tests/test_width.py"),
    ("grow/width.py", 'c = math.sqrt(in_space.old / in_space.new) if (init == "vt" and rescale and layer.bn) else 1.0', "c = 1.0",
     "tests/test_width.py"),
    ("grow/width.py", "o.running_var * c * c + (c * c - 1) * o.eps", "o.running_var * c * c", "tests/test_width.py"),
    ("methods/widen.py", "return base_batch * min(8, 2 ** int(math.log2(max(final_flops / flops, 1.0))))",
     "return base_batch", "tests/test_widen_method.py tests/test_compound.py"),
    ("methods/widen.py", "inner = tuple(min(i, even(i * f)) for i in final.inner_widths)", "inner = ()",
     "tests/test_widen_method.py"),
    ("methods/widen.py", "at.append(min(max(round(total), lowest), highest))", "at.append(round(total))",
     "tests/test_widen_method.py"),
    ("methods/widen.py", "            ctx.set_lr_scales(dict(zip(self.group_names()[:-1], self.scales(wider)[:-1])))\n",
     "            pass\n",
     "tests/test_widen_method.py"),
    ("methods/widen.py", "ids[name] = torch.where(shifted > 0, shifted - 1, float(newest)).to(torch.uint8)",
     "ids[name] = torch.where(shifted > 0, shifted - 1, 0.0).to(torch.uint8)",
     "tests/test_widen_method.py tests/test_compound.py"),
    ("methods/widen.py", "                ids[name] = self.ids[src].clone()\n",
     "                ids[name] = torch.zeros(p.shape, dtype=torch.uint8)\n", "tests/test_compound.py"),
    ("methods/mgopt.py", "            opts[0].step()\n", "            pass\n", "tests/test_mgopt.py"),
    ("methods/mgopt.py", "            if self.opts.line_search != \"fixed\":", "            if False:",
     "tests/test_mgopt.py"),
    # compound growth: resize, the plan, the trigger
    ("grow/resize.py", "            continue  # fresh in the middle net: nothing of the input to carry",
     "            out[name] = mid; continue", "tests/test_resize.py"),
    ("grow/resize.py", "return getattr(outer, \"gather\", outer)(getattr(inner, \"gather\", inner)(t))",
     "return outer(inner(t))", "tests/test_resize.py"),
    ("methods/compound.py", "return [(max(0, i - n + depth_steps), max(0, i - n + width_steps)) for i in range(n + 1)]",
     "return [(min(i, depth_steps), min(i, width_steps)) for i in range(n + 1)]", "tests/test_compound.py"),
    ("methods/compound.py", "if d < depth_steps and (d <= w or w == width_steps):",
     "if d < depth_steps and (d < w or w == width_steps):", "tests/test_compound.py"),
    ("methods/compound.py", "                    ctx.schedule.add_restart(e)\n", "                    pass\n",
     "tests/test_compound.py"),
    ("methods/compound.py", "        if deepens and self.opts.trigger == \"lipschitz\":",
     "        if self.opts.trigger == \"lipschitz\":", "tests/test_compound.py"),
    ("methods/compound.py", "        self.groups.follow(new, pmap, new_group=widens)",
     "        self.groups.follow(new, pmap, new_group=True)", "tests/test_compound.py"),
    # MG/OPT: its transfer operators and its V-cycle
    ("grow/levels.py", "m[j, 2 * j - 1], m[j, 2 * j], m[j, 2 * j + 1] = 0.25, 0.5, 0.25",
     "m[j, 2 * j - 1], m[j, 2 * j], m[j, 2 * j + 1] = 0.25, 0.25, 0.5", "tests/test_levels.py"),
    ("grow/levels.py", "return apply([m.T for m in prolongation(fine, kind)], fine_values, names)",
     "return apply(restriction(fine), fine_values, names)", "tests/test_levels.py"),
    ("grow/levels.py", "return loss - sum((v[n] * p).sum() for n, p in model.named_parameters())", "return loss",
     "tests/test_levels.py"),
    ("methods/mgopt.py", '        if not self.last["slope"] < 0:', "        if False:", "tests/test_mgopt.py"),
    ("methods/mgopt.py", "        best = values.argmin()", "        best = values.argmax()", "tests/test_mgopt.py"),
    ("methods/mgopt.py", "            with torch.no_grad(), step.autocast():\n                out = step.model(x)",
     "            with torch.no_grad(), kept_buffers(step.model), step.autocast():\n                out = step.model(x)",
     "tests/test_mgopt.py"),
    ("methods/mgopt.py", "            if self.opts.reset_momentum:\n                o.state.clear()", "            if False:\n                pass",
     "tests/test_mgopt.py"),
    ("methods/mgopt.py", "step.epoch >= self.opts.mg_until * step.epochs", "False", "tests/test_mgopt.py"),
    ("methods/mgopt.py", "            return self._prolong_up(ctx.model, ctx.epoch)", "            return None", "tests/test_mgopt.py"),
    ("train/trainer.py", 'steps * self._size["flops"] / self._reference_flops', "steps",
     "tests/test_compare.py"),
    ("report/compare.py", 'return reference * row["grad_equivalents"] / row["steps"]', 'return row.get("flops") or 0',
     "tests/test_compare.py"),
    # go wide, then narrow: the phases, what trains when, the frozen wide net, its cost
    ("methods/wide2narrow.py", "        net.eval()\n", "", "tests/test_wide2narrow.py"),
    ("methods/wide2narrow.py", '        if phase == "imitate":  # the maps go', '        if False:  # the maps go',
     "tests/test_wide2narrow.py"),
    ("methods/wide2narrow.py", "ctx.add_work(ctx.steps_per_epoch * self.cost)",
     "ctx.row[\"grad_equivalents\"]", "tests/test_wide2narrow.py"),
    ("methods/wide2narrow.py", 'scales = {f"unit{i}": 1.0, f"below{i}": self.opts.lower_lr, f"above{i}": 0.0}',
     'scales = {f"unit{i}": 1.0, f"below{i}": 1.0, f"above{i}": 1.0}', "tests/test_wide2narrow.py"),
    ("train/trainer.py", "        model = self.method.attach(model)", "", "tests/test_wide2narrow.py"),
    # several processes
    ("train/step.py", "        self.ranks.mean_grads(self.model.parameters())\n", "", "tests/test_distributed.py"),
    ("train/trainer.py", "            self.ranks.average_buffers(module)\n", "            pass\n", "tests/test_distributed.py"),
    ("train/trainer.py", '        self.ranks.broadcast_([self.model, *self.method_modules().values()])  # one start', '        pass  # one start',
     "tests/test_distributed.py"),
    ("train/trainer.py", "        self.ranks.same_rng(self.device)\n        ctx = self._ctx(row)",
     "        ctx = self._ctx(row)", "tests/test_distributed.py"),
    ("train/trainer.py", '        if checkpoint["world_size"] != self.ranks.world:', '        if False:', "tests/test_distributed.py"),
    ("data/loader.py", "[:, self.rank]", "[:, 0]", "tests/test_distributed.py"),
    ("methods/mgopt.py", "        step.ranks.mean_([*grads, loss])", "        pass", "tests/test_distributed.py"),
    ("train/trainer.py", "        for module in (self.model, *self.method_modules().values()):",
     "        for module in (self.model,):", "tests/test_distributed.py"),
    ("data/loader.py", "split.images[rank::world]", "split.images", "tests/test_distributed.py"),
    ("train/step.py", "        steps *= self.ranks.world\n", "", "tests/test_distributed.py"),
    # streamed data
    ("data/stream.py", "[:, self.rank].reshape(-1)", "[:, 0].reshape(-1)", "tests/test_stream.py"),
    ("data/stream.py", "return np.random.default_rng([self.seed, self.epoch, i])", "return np.random.default_rng()",
     "tests/test_stream.py"),
    ("data/stream.py", "flip = int(rng.random() < 0.5)", "flip = 0", "tests/test_stream.py"),
    ("data/stream.py", "if self._prepared < self.steps:", "if True:", "tests/test_stream.py"),
    ("data/stream.py", 'if self.raw and im.format == "JPEG" and im.mode == "RGB":', 'if self.raw and im.mode == "RGB":',
     "tests/test_stream.py"),
    ("data/stream.py", "res = res.flip(-1)", "pass", "tests/test_stream.py"),
    ("train/step.py", "        self.loader.stage()  # streamed data", "        pass  # streamed data", "tests/test_stream.py"),
    ("data/stream.py", "self.indices = list(range(rank, len(split), world))", "self.indices = list(range(len(split)))",
     "tests/test_stream.py"),
    # the baseline's frontier
    ("report/frontier.py", "return a.acc + (b.acc - a.acc) * (x - at(a)) / (at(b) - at(a))", "return a.acc",
     "tests/test_frontier.py"),
    ("report/frontier.py", "return at(a) + (at(b) - at(a)) * (acc - a.acc) / (b.acc - a.acc)", "return at(b)",
     "tests/test_frontier.py"),
    ("report/frontier.py", "mean(r.flops for r in runs))", "mean(r.epochs for r in runs))", "tests/test_frontier.py"),
    ("report/frontier.py", "target = longest.acc - TARGET_BELOW", "target = longest.acc", "tests/test_frontier.py"),
    ("report/frontier.py", ' and not (info.get("config") or {}).get("restarts")', "", "tests/test_frontier.py"),
    ("report/frontier.py", "    if p.seconds < first.seconds and p.acc > first.acc:", "    if False:", "tests/test_frontier.py"),
    ("report/frontier.py", "[r for r in rs if r.epochs == e]", "rs", "tests/test_frontier.py"),
    ("methods/wide2narrow.py", 'return {"teacher": self.teacher_net} if self.teacher_net is not None else {}', "return {}",
     "tests/test_wide2narrow.py"),
    ("methods/mgopt.py", "            if value <= f0 + ARMIJO_C * alpha * slope:", "            if True:", "tests/test_mgopt.py"),
    ("methods/mgopt.py", "        with kept_buffers(model):\n            loss, _ = self._objective(model, x, y, v, step)\n            grads",
     "        with torch.enable_grad():\n            loss, _ = self._objective(model, x, y, v, step)\n            grads",
     "tests/test_mgopt.py"),
    # --no-lr-restarts: the growths leave the schedule alone, and compare says so
    ("methods/multilevel.py", "for e in grow_at if self.opts.lr_restarts else ():", "for e in grow_at:", GROW),
    ("methods/lipgrow.py", "        if self.opts.lr_restarts:  # anneal", "        if True:  # anneal", GROW),
    ("methods/compound.py", "if a.blocks != b.blocks and self.opts.lr_restarts:", "if a.blocks != b.blocks:", GROW),
    ("methods/depth.py", "    if lr_restarts and schedule not in COSINES:", "    if schedule not in COSINES:", GROW),
    ("report/compare.py", 'if self.grow_rows and restarted else ""', 'if self.grow_rows else ""', "tests/test_compare.py"),
]


BACKUP = ROOT / ".mutation_backup"  # the file under mutation, as it was (git-ignored)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def restore_after_a_kill() -> None:
    """A run killed while a file was mutated (SIGKILL, a lost machine) left the mutation in src/: put it back."""
    if BACKUP.is_file():
        f, _, src = BACKUP.read_text().partition("\n")
        (ROOT / "src" / "resgrow" / f).write_text(src)
        BACKUP.unlink()
        print(f"restored src/resgrow/{f}, left mutated by a run that was killed", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("entries", nargs="*", type=int, help="indices into the list (default: all)")
    ap.add_argument("--list", action="store_true", help="print the entries and exit")
    a = ap.parse_args()
    if a.list:
        for i, (f, old, new, _) in enumerate(MUTATIONS):
            print(f"{i:3d} {f}: {old.strip()[:60]!r} -> {new.strip()[:40]!r}")
        return 0
    restore_after_a_kill()
    for sig in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: the `finally` below puts the source back
        signal.signal(sig, _interrupt)
    chosen = a.entries or range(len(MUTATIONS))
    # A red suite would make every entry look caught: the tests the entries run must pass unmutated first.
    suites = sorted({MUTATIONS[i][3] for i in chosen})
    wanted = sorted({t for suite in suites for t in suite.split()})
    clean = subprocess.run([*PYTEST, *(["tests"] if "tests" in wanted else wanted)],
                           cwd=ROOT, capture_output=True, text=True)
    if clean.returncode != 0:
        print("the unmutated tests fail, so no entry would tell anything; fix them first:\n" + clean.stdout[-2000:])
        return 2
    survived, stale = [], []
    for i in chosen:
        f, old, new, tests = MUTATIONS[i]
        path = ROOT / "src" / "resgrow" / f
        src = path.read_text()
        if src.count(old) != 1:
            stale.append(i)
            print(f"{i:3d} STALE    {f}: the text occurs {src.count(old)} times, not once", flush=True)
            continue
        BACKUP.write_text(f"{f}\n{src}")  # a SIGKILL skips `finally`: the next run restores from this
        path.write_text(src.replace(old, new))
        try:
            r = subprocess.run([*PYTEST, *tests.split()], cwd=ROOT, capture_output=True, text=True)
        finally:
            path.write_text(src)
            BACKUP.unlink()
        caught = r.returncode != 0
        survived += [] if caught else [i]
        print(f"{i:3d} {'caught  ' if caught else 'SURVIVED'} {f}: {old.strip()[:60]!r} -> {new.strip()[:40]!r}", flush=True)
    print(f"{len(survived)} survived {survived or ''}; {len(stale)} stale {stale or ''}")
    return 1 if survived or stale else 0


if __name__ == "__main__":
    sys.exit(main())
