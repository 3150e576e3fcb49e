"""Data-parallel training over 2 gloo ranks on CPU: the ranks stay bitwise identical through every epoch and
every size change (new units drawn at random included), 2 ranks x batch B follow 1 rank x batch 2B, a run
resumes exactly with the same number of ranks and refuses another, and under torchrun a killed rank stops the
others and SIGTERM to the launcher leaves one resumable checkpoint."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import cfg
from resgrow.methods import build_method
from resgrow.models import ArchSpec, ResNet, ViTSpec, model_for
from resgrow.train import Trainer

SPEC = ArchSpec("basic", (2, 2, 2), (8, 16, 32), stem_width=8)
unix = pytest.mark.skipif(os.name != "posix" or not Path("/proc").is_dir(), reason="finds torchrun's workers in /proc")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, data, out, method, options, epochs, batch, keep, resume, until):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from resgrow.train.distributed import Ranks

    ranks = Ranks.from_env("cpu")
    torch.manual_seed(rank)  # each rank draws its own start and its own new units: rank 0's must reach them all
    options = dict(options)  # a case may give its own net; MG/OPT halves the blocks
    spec = options.pop("spec", None) or (SPEC if method != "mgopt" else SPEC.replace(blocks=(4, 4, 4)))
    trainer = Trainer(model_for(spec), data, cfg(epochs=epochs, batch_size=batch), build_method(method, **options),
                      out=out, resume=resume, ranks=ranks)
    torch.manual_seed(100 + rank)
    if resume:
        trainer.fit()
        torch.save(trainer.model.state_dict(), Path(keep) / f"r{rank}_final.pt")
    for e in range(1, (until or epochs) + 1) if not resume else ():
        trainer.fit(until=e)
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        state |= {f"{name}.{k}": v.clone() for name, m in trainer.method_modules().items() for k, v in m.state_dict().items()}
        torch.save(state, Path(keep) / f"r{rank}_e{e}.pt")  # the model and the method's own modules (coarse levels)
    if rank == 0:
        torch.save([dict({k: r[k] for k in ("train_loss", "test_acc", "steps", "blocks", "widths")},
                         kinds=[e["kind"] for e in r["events"]]) for r in trainer.history], Path(keep) / "rows.pt")
    _close_and_check_released(ranks)


def _close_and_check_released(ranks):
    """Close the group and check that nothing else holds it: a group that outlives destroy_process_group is
    torn down at interpreter exit, where gloo aborts a rank (SIGABRT) whose peer is still running."""
    import torch.distributed as dist

    group = dist.distributed_c10d._get_default_group()
    if ranks.rank == 0:
        time.sleep(0.5)  # the other rank leaves first, as rank 0 does when it writes the last checkpoint
    ranks.close()
    held = sys.getrefcount(group) - 2  # the local name and getrefcount's own argument
    assert held == 0, f"rank {ranks.rank}: {held} references to the process group outlive its destruction"


def _spawn(world, data, out, method="baseline", options=None, epochs=2, batch=50, keep=None, resume=False, until=None):
    mp.spawn(_worker, args=(world, _port(), data, out, method, options or {}, epochs, batch, str(keep), resume, until),
             nprocs=world, join=True)


def test_the_ranks_shard_each_global_batch_and_the_test_set(small):
    from resgrow.data.loader import DeviceLoader, EvalLoader

    one = DeviceLoader(small.train, 100, "cpu", (0.5,) * 3, (0.25,) * 3)
    two = [DeviceLoader(small.train, 50, "cpu", (0.5,) * 3, (0.25,) * 3, rank=r, world=2) for r in (0, 1)]
    for loader in (one, *two):
        loader.start_epoch(3)
    assert one.steps == two[0].steps == 4
    for _ in range(one.steps):
        x, y = one.next_batch()
        (x0, y0), (x1, y1) = two[0].next_batch(), two[1].next_batch()
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    shards = [EvalLoader(small.test, 1000, "cpu", (0.5,) * 3, (0.25,) * 3, rank=r, world=2) for r in (0, 1)]
    assert len(shards[0]) + len(shards[1]) == len(small.test.labels)
    assert sorted(torch.cat([s.labels for s in shards]).tolist()) == sorted(small.test.labels.tolist())


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method,options", [
    ("multilevel", {"start_blocks": "1-1-1"}),  # a depth growth after epoch 1
    ("widen", {"widen_init": "net2wider", "growths": 1, "widen_every": 1}),  # new units drawn at random
    ("lipgrow", {"start_blocks": "1-1-1", "lip_window": 1}),  # a score measured on each rank, rank 0's decides
    ("mgopt", {"nested_epochs": 1}),
    ("compound", {"trigger": "lipschitz", "lip_window": 1}),  # depth and width at once, new units drawn at random
    ("widen", {"spec": ViTSpec((2,), 32, 4, 64), "growths": 1, "widen_every": 1, "start_width": 0.5}),  # a ViT's heads  # V-cycles: sub-steps, gradients and line searches averaged over the ranks
])
def test_two_ranks_stay_bitwise_identical_through_every_epoch_and_growth(small, tmp_path, method, options):
    _spawn(2, small, tmp_path / "run", method, options, epochs=3, keep=tmp_path)
    for e in (1, 2, 3):
        r0, r1 = torch.load(tmp_path / f"r0_e{e}.pt"), torch.load(tmp_path / f"r1_e{e}.pt")
        assert _same(r0, r1), f"epoch {e}"
    rows = torch.load(tmp_path / "rows.pt")
    assert any("grow" in r["kinds"] for r in rows)  # MG/OPT too: its nested iteration grows into the fine net
    assert len({(r["blocks"], r["widths"]) for r in rows}) == 2  # the ranks grew, and stayed the same
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # written by rank 0 alone


def test_two_ranks_of_batch_b_follow_one_rank_of_batch_2b(small, tmp_path):
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    _spawn(2, small, None, epochs=3, batch=50, keep=tmp_path / "two")
    _spawn(1, small, None, epochs=3, batch=100, keep=tmp_path / "one")
    two, one = torch.load(tmp_path / "two" / "rows.pt"), torch.load(tmp_path / "one" / "rows.pt")
    assert [r["steps"] for r in two] == [r["steps"] for r in one] == [4, 4, 4]  # the same global batches
    for a, b in zip(two, one):
        # the same images, gradients averaged alike; only BN's batch statistics (50 against 100 images) differ
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.02)  # measured: within 0.5%


def test_a_two_rank_run_resumes_exactly_and_refuses_another_number_of_ranks(small, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "part").mkdir()
    _spawn(2, small, tmp_path / "a", "multilevel", {"start_blocks": "1-1-1"}, epochs=3, keep=tmp_path / "full")
    _spawn(2, small, tmp_path / "b", "multilevel", {"start_blocks": "1-1-1"}, epochs=3, keep=tmp_path / "part", until=1)
    _spawn(2, small, tmp_path / "b", "multilevel", {"start_blocks": "1-1-1"}, epochs=3, keep=tmp_path / "part",
           resume=True)
    full, resumed = torch.load(tmp_path / "full" / "r0_e3.pt"), torch.load(tmp_path / "part" / "r1_final.pt")
    assert _same(full, resumed)
    from resgrow.errors import ResgrowError

    one = Trainer(ResNet(SPEC), small, cfg(epochs=3, batch_size=50), build_method("multilevel", start_blocks="1-1-1"),
                  out=tmp_path / "b", resume=True)
    with pytest.raises(ResgrowError, match="2 processes"):
        one.fit()


def _torchrun(small_zip, out, epochs, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", RESGROW_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
           "-m", "resgrow", "train", "--arch", "cifar_resnet8", "--data", str(small_zip), "--epochs", str(epochs),
           "--batch-size", "50", "--device", "cpu", "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _workers(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the launcher's worker processes."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher.pid:
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0][5:])] = int(d.name)
    return found


def _wait_for(path: Path, launcher, seconds=120) -> None:
    t0 = time.time()
    while not path.exists():
        assert launcher.poll() is None, launcher.communicate()
        assert time.time() - t0 < seconds, f"no {path} after {seconds} s"
        time.sleep(0.2)


@unix
def test_under_torchrun_a_killed_rank_stops_the_others_with_a_line_naming_it(small_zip, tmp_path):
    launcher = _torchrun(small_zip, tmp_path / "run", 200, tmp_path)
    try:
        _wait_for(tmp_path / "run" / "checkpoint.pt", launcher)
        os.kill(_workers(launcher)[1], signal.SIGKILL)
        t0 = time.time()
        _, err = launcher.communicate(timeout=120)
        assert time.time() - t0 < 120 and launcher.returncode != 0
        assert "rank: 1" in err, err[-2000:]
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)


@unix
def test_under_torchrun_sigterm_to_the_launcher_stops_every_rank_after_its_epoch_with_one_checkpoint(small_zip, tmp_path):
    launcher = _torchrun(small_zip, tmp_path / "run", 200, tmp_path)
    try:
        _wait_for(tmp_path / "run" / "checkpoint.pt", launcher)
        launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert 1 <= ck["epoch"] < 200 and ck["world_size"] == 2
    assert "stopped" in err and "--resume" in err, err[-2000:]
