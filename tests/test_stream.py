"""Streamed data (--stream): images read, decoded and augmented by host workers into the buffers the step reads;
the same batches on any number of workers and shards, a resumed run exact, accuracy as in memory."""

import numpy as np
import pytest
import torch

from resgrow.cli import main
from resgrow.data.stream import StreamLoader, open_stream, random_resized_crop, throughput
from resgrow.models import ResNet
from resgrow.train import Trainer

from conftest import TINY, cfg, weights

STATS = ((0.5,) * 3, (0.25,) * 3)


def test_random_resized_crops_stay_inside_the_image_with_the_rule_s_area_and_aspect():
    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, w, h = random_resized_crop(50, 40, rng)
        assert 0 <= left and left + w <= 50 and 0 <= top and top + h <= 40
        assert 0.08 * 2000 * 0.8 <= w * h <= 2000 and 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25
    assert random_resized_crop(1000, 10, rng) == (493, 0, 13, 10)  # no try fits: the centre, aspect clamped


def test_the_batches_are_the_same_for_any_number_of_workers_and_sharded_like_the_device_loader(small_zip):
    data = open_stream(small_zip, 24)
    one = StreamLoader(data, 100, "cpu", *STATS, seed=3, workers=0)
    two = [StreamLoader(data, 50, "cpu", *STATS, seed=3, workers=2, rank=r, world=2) for r in (0, 1)]
    for loader in (one, *two):
        loader.start_epoch(1)
    assert one.steps == two[0].steps == 4
    for _ in range(2):
        for loader in (one, *two):
            loader.stage()
        x, y = one.next_batch()
        (x0, y0), (x1, y1) = two[0].next_batch(), two[1].next_batch()
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    assert x.shape == (100, 3, 24, 24)
    from resgrow.data.stream import StreamEval

    shards = [StreamEval(data.test, 24, "imagenet", 1000, "cpu", *STATS, rank=r, world=2, workers=0) for r in (0, 1)]
    assert len(shards[0]) + len(shards[1]) == len(data.test)
    labels = sorted(torch.cat([y for shard in shards for _, y in shard]).tolist())
    assert labels == sorted(data.test.labels.tolist())
    assert throughput(data, workers=0, batch_size=50, batches=2) > 0


def test_a_streamed_run_resumes_to_the_same_weights(small_zip, tmp_path):
    data = open_stream(small_zip, 32, "crop")

    def run(out, resume=False):
        torch.manual_seed(0)
        return Trainer(ResNet(TINY), data, cfg(epochs=2, batch_size=100, workers=1), out=out, resume=resume)

    full = run(tmp_path / "full")
    rows = full.fit()
    assert rows[-1]["data_wait_seconds"] >= 0
    run(tmp_path / "part").fit(until=1)
    resumed = run(tmp_path / "part", resume=True)
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_streamed_run_and_one_in_memory_agree_in_accuracy_within_noise(mini_zip, tmp_path, capsys):
    common = ["train", "--arch", "cifar_resnet8", "--data", str(mini_zip), "--epochs", "4", "--device", "cpu", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "mem")]) == 0
    assert main([*common, "--stream", "--stream-augment", "crop", "--image-size", "32", "--workers", "2",
                 "--out", str(tmp_path / "stream")]) == 0
    out = capsys.readouterr().out.splitlines()
    accs = [float(line.split("test accuracy ")[1].split("%")[0]) for line in out if "test accuracy" in line]
    # three seeds of each, 6 epochs, spread over 4.2 points in memory (benchmarks/stream/accuracy_check.log)
    assert len(accs) == 2 and abs(accs[0] - accs[1]) < 6 and min(accs) > 20, accs


def test_bad_streaming_input_is_one_line(capsys, tmp_path):
    rc = main(["train", "--arch", "resnet20", "--data", str(tmp_path / "nothing"), "--stream", "--device", "cpu",
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "neither" in err[0], err


def test_the_imagenet_recipe_fills_in_what_the_command_leaves_out(monkeypatch):
    from resgrow.cli import _apply_recipe, build_parser

    def parsed(*extra):
        argv = ["train", "--arch", "resnet50", "--data", "imagenet.zip", "--out", "r", "--recipe", "imagenet", *extra]
        a = build_parser(methods=True).parse_args(argv)
        a.argv = argv
        _apply_recipe(a)
        return a

    a = parsed()
    assert (a.epochs, a.batch_size, a.lr, a.weight_decay, a.schedule, a.milestones) == (90, 256, 0.1, 1e-4, "step", (30, 60))
    assert a.stream and a.image_size == 224 and a.stream_augment == "imagenet"
    monkeypatch.setenv("WORLD_SIZE", "8")
    a = parsed("--epochs", "30", "--wd", "5e-5")
    assert (a.epochs, a.batch_size, a.lr, a.weight_decay, a.milestones) == (30, 32, 0.1, 5e-5, (10, 20))
    a = parsed("--batch-size", "64")  # 8 x 64 = 512: the lr doubles
    assert a.lr == pytest.approx(0.2)


BASIC18 = dict(block="basic", blocks=(2, 2, 2, 2), widths=(8, 16, 32, 64))
BOTTLENECK50 = dict(block="bottleneck", blocks=(3, 4, 6, 3), widths=(32, 64, 128, 256))  # resnet50's blocks, thin


@pytest.mark.parametrize("net,method,options,epochs", [
    (BASIC18, "multilevel", {"start_blocks": "1-1-1-1"}, 2),
    (BASIC18, "widen", {"growths": 1, "widen_every": 1}, 2),
    (BOTTLENECK50, "multilevel", {"partial_growth": True, "grow_at": (1, 2)}, 3),  # 1-1-2-1 -> 2-2-4-2 -> 3-4-6-3
], ids=["resnet18-multilevel", "resnet18-widen", "resnet50-multilevel-partial"])
def test_growth_methods_train_imagenet_style_nets_on_streamed_data(small_zip, net, method, options, epochs):
    from resgrow.methods import build_method
    from resgrow.models import ArchSpec

    spec = ArchSpec(**net, stem="imagenet", shortcut="B", stem_width=8)
    torch.manual_seed(0)
    rows = Trainer(ResNet(spec), open_stream(small_zip, 32), cfg(epochs=epochs, batch_size=100, workers=1),
                   build_method(method, **options)).fit()
    assert (rows[0]["blocks"], rows[0]["widths"]) != (rows[-1]["blocks"], rows[-1]["widths"])
    assert (rows[-1]["blocks"], rows[-1]["widths"]) == (spec.blocks_str(), spec.widths_str())
