"""Streamed data (--stream): images read, decoded and augmented by host workers into the buffers the step reads;
the same batches on any number of workers and shards, a resumed run exact, accuracy as in memory."""

import dataclasses
import io
import zipfile

import numpy as np
import pytest
import torch

from conftest import TINY, cfg, weights
from resgrow.cli import main
from resgrow.data.stream import StreamLoader, open_stream, random_resized_crop, throughput
from resgrow.errors import ResgrowError
from resgrow.models import ResNet
from resgrow.train import Trainer

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


def pil_decoder(datas):
    """What torchvision's nvJPEG decoder returns (CHW uint8 RGB images), by Pillow: the device path on the CPU."""
    from PIL import Image

    return [torch.from_numpy(np.asarray(Image.open(io.BytesIO(bytes(d.numpy()))).convert("RGB")).copy()).permute(2, 0, 1)
            for d in datas]


def folder_with_a_png(small_zip, root):
    """An ImageFolder directory of the small zip's images, one of them a PNG (which the workers decode)."""
    from PIL import Image

    with zipfile.ZipFile(small_zip) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        for n in names:
            (root / n).parent.mkdir(parents=True, exist_ok=True)
            (root / n).write_bytes(z.read(n))
    first = sorted(n for n in names if n.startswith("train/"))[0]
    Image.open(root / first).save((root / first).with_suffix(".png"))
    (root / first).unlink()
    return root


def check_device_decoding(data, device, decoder, mean_below: float, p99_below: float) -> None:
    """Batches decoded on `device` by `decoder` against the host workers': the same images in the same order, the
    same crops and flips from the same generator; Pillow's and torch's antialiased bilinear resampling (and a
    decoder's rounding) differ by a little."""
    host = StreamLoader(dataclasses.replace(data, decode="host"), 100, device, *STATS, seed=3, workers=0)
    dev = StreamLoader(data, 100, device, *STATS, seed=3, workers=1, decoder=decoder)
    assert dev.crops is not None and host.crops is None
    for epoch in (0, 1):
        for loader in (host, dev):
            loader.start_epoch(epoch)
        for _ in range(host.steps):
            host.stage(), dev.stage()
            assert torch.equal(host.y.cpu(), dev.y.cpu())
            diff = (host.x.float() - dev.x.float()).abs().cpu()
            assert diff.mean() < mean_below and diff.quantile(0.99) < p99_below, (diff.mean(), diff.quantile(0.99))
        assert dev._staged == dev._prepared == dev.steps  # nothing prepared past the epoch's end


def test_decoding_on_the_device_gives_the_host_workers_batches_within_resampling_noise(small_zip, tmp_path):
    data = open_stream(folder_with_a_png(small_zip, tmp_path / "set"), 24, decode="device")
    check_device_decoding(data, "cpu", pil_decoder, 1.5, 12)
    dev = StreamLoader(data, 100, "cpu", *STATS, seed=3, workers=0, decoder=pil_decoder)
    png = next(i for i, f in enumerate(data.train.files) if f.endswith(".png"))
    pixels, crop, _ = dev.images[png]  # decoded and augmented by the worker
    assert crop.tolist() == [-1] * 5 and pixels.shape == (24, 24, 3)
    file_bytes, crop, _ = dev.images[png + 1]  # a JPEG: its bytes, and the crop and flip for the device
    assert file_bytes.dim() == 1 and file_bytes[:2].tolist() == [0xFF, 0xD8] and min(crop.tolist()) >= 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG decodes on a CUDA device")
def test_nvjpeg_on_the_gpu_gives_the_host_workers_batches_within_decoding_noise(small_zip, tmp_path):
    from resgrow.data.stream import device_decoder

    decoder = device_decoder("cuda")
    if decoder is None:
        pytest.skip("torchvision's nvJPEG decoder is not at hand")
    # nvJPEG's IDCT and chroma upsampling are not libjpeg's: a looser bound than Pillow against itself
    check_device_decoding(open_stream(folder_with_a_png(small_zip, tmp_path / "set"), 24, decode="device"),
                          "cuda", decoder, 3, 24)


def test_where_streamed_images_are_decoded_is_resolved_before_the_data_is_read(capsys, small_zip, tmp_path, monkeypatch):
    from resgrow.data import stream

    assert stream.resolve_decode("auto", "imagenet", torch.device("cpu")) == ("host", None)
    with pytest.raises(ResgrowError, match="applies to the imagenet augmentation"):
        open_stream(small_zip, 24, "crop", decode="device")
    common = ["train", "--arch", "cifar_resnet8", "--data", str(tmp_path / "no-such.zip"), "--device", "cpu",
              "--out", str(tmp_path / "r")]
    for extra, words in [(["--stream", "--decode", "device"], "needs a CUDA device and torchvision's nvJPEG decoder"),
                         (["--decode", "host"], "--decode applies to streamed data (--stream)")]:
        assert main([*common, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    # where the decoder is at hand, a run decodes there and says so in its first line
    monkeypatch.setattr(stream, "device_decoder", lambda device: pil_decoder)
    assert main(["train", "--arch", "cifar_resnet8", "--data", str(small_zip), "--stream", "--image-size", "24",
                 "--epochs", "1", "--batch-size", "100", "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "d")]) == 0
    said = capsys.readouterr()
    assert "streamed at 24x24 (decoded on the device)" in said.out + said.err


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
    from resgrow.cli import _request, build_parser
    from resgrow.launch import apply_recipe

    def parsed(*extra):
        argv = ["train", "--arch", "resnet50", "--data", "imagenet.zip", "--out", "r", "--recipe", "imagenet", *extra]
        req = _request(build_parser(methods=True).parse_args(argv))
        apply_recipe(req)
        s = req.settings
        return req, (s["epochs"], s["batch_size"], s["lr"], s["weight_decay"], s["schedule"], s["milestones"])

    req, got = parsed()
    assert got == (90, 256, 0.1, 1e-4, "step", (30, 60))
    assert req.stream and req.image_size == 224 and req.stream_augment == "imagenet"
    monkeypatch.setenv("WORLD_SIZE", "8")
    _, got = parsed("--epochs", "30", "--wd", "5e-5")
    assert got[:4] + got[5:] == (30, 32, 0.1, 5e-5, (10, 20))
    _, got = parsed("--batch-size", "64")  # 8 x 64 = 512: the lr doubles
    assert got[2] == pytest.approx(0.2)


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
