"""Streaming data, for sets that do not fit in device memory (`--stream`): images stay JPEG files in their
ImageFolder zip or directory, host worker processes read, decode and augment them batch by batch, and each
batch goes to the device through pinned memory with a non-blocking copy, into static buffers that the
captured training step reads. So the step stays one CUDA graph, the device holds one batch, and the workers
prepare the next batches while the device trains on this one.

Augmentation (in the workers, with Pillow):
- "imagenet" (the default): torchvision's reference recipe, random-resized crop (area 8% to 100% of the
  image, aspect ratio 3/4 to 4/3, ten tries, else the centre crop) to `size` x `size` and a horizontal flip
  for training; the shorter side resized to size x 8/7 and the centre `size` x `size` crop for evaluation.
- "crop": the device loader's CIFAR recipe, the image resized to `size`, zero-padded by 4 pixels and
  randomly cropped back, and a flip; evaluation takes the resized image.
Every random choice comes from a generator seeded by (seed, epoch, image), so a resumed run sees the batches
an uninterrupted one would have. Normalisation uses ImageNet's channel statistics (a pass over a streamed
set to measure its own would read it all once more).

Decoding on the GPU (`decode="device"`, or "auto" where torchvision's nvJPEG decoder and a CUDA device are
at hand): for "imagenet" training batches, the workers only read each file and its JPEG header, and draw the
crop and flip from the same seeded generator; the batch is decoded on the device in one batched call, and
each image cropped, resized (bilinear, antialiased, as Pillow's) and flipped there. This runs on a side
stream one batch ahead, so it overlaps the training step. Other files (PNGs, CMYK or greyscale JPEGs) are
decoded by the workers; evaluation batches are too (a small share of an epoch).
"""

from __future__ import annotations

import io
import math
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ResgrowError
from .loader import _Normalize, epoch_seed
from .sources import IMAGE_SUFFIXES, LAYOUT_HINT, _layout, fit_square

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
AUGMENTS = ("imagenet", "crop")
DECODES = ("auto", "host", "device")


@dataclass
class StreamSplit:
    source: str  # the zip or directory
    files: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class StreamData:
    """An ImageFolder set read from its files as training goes; what `load_dataset` is for a set in memory."""

    name: str
    classes: list[str]
    train: StreamSplit
    test: StreamSplit
    size: int
    augment: str = "imagenet"
    decode: str = "host"  # where training images are decoded: host | device (auto is resolved by the trainer)
    val: None = None
    test_folder: str = "test"
    streamed = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.size, self.size, 3

    def summary(self) -> str:
        where = "decoded on the device" if self.decode == "device" else "decoded by host workers"
        return (f"{self.name}: {len(self.train)} train, {len(self.test)} {self.test_folder}, streamed at "
                f"{self.size}x{self.size} ({where}), {self.num_classes} classes")


def open_stream(path: str | os.PathLike, size: int, augment: str = "imagenet", decode: str = "auto") -> StreamData:
    """The file lists of an ImageFolder zip or directory (train/<class>/..., test/ or val/<class>/...); no image
    is read yet."""
    if augment not in AUGMENTS:
        raise ResgrowError(f"unknown streaming augmentation {augment!r}; known: {', '.join(AUGMENTS)}")
    if decode not in DECODES:
        raise ResgrowError(f"unknown --decode {decode!r}; known: {', '.join(DECODES)}")
    if decode == "device" and augment != "imagenet":
        raise ResgrowError("--decode device applies to the imagenet augmentation; --stream-augment crop decodes on the "
                           "host")
    if size < 8:
        raise ResgrowError(f"a streamed image size must be at least 8 pixels, not {size}")
    path = Path(path)
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        read = lambda n: (path / n).read_bytes()  # noqa: E731
    elif path.is_file():
        try:
            with zipfile.ZipFile(path) as z:
                names = [i.filename for i in z.infolist() if not i.is_dir()]
        except zipfile.BadZipFile as e:
            raise ResgrowError(f"{path} is neither a directory nor a readable zip file ({e})") from None
        read = _ZipReader(str(path))
    else:
        raise ResgrowError(f"--stream reads an ImageFolder zip or directory; {path} is neither")
    splits, folder = _layout(names, path, read)
    classes = sorted({c for c, _ in splits["train"]})
    extra = sorted({c for c, _ in splits["test"]} - set(classes))
    if extra:
        raise ResgrowError(f"{path}: test classes {extra} do not appear in train; {LAYOUT_HINT}")
    out = {}
    for split, items in splits.items():
        items = sorted(items)
        bad = [f for _, f in items if Path(f).suffix.lower() not in IMAGE_SUFFIXES]
        if bad:
            raise ResgrowError(f"{path}: {bad[0]} is not an image file ({LAYOUT_HINT})")
        out[split] = StreamSplit(str(path), [f for _, f in items],
                                 torch.tensor([classes.index(c) for c, _ in items], dtype=torch.int64))
    return StreamData(path.stem, classes, out["train"], out["test"], size, augment, decode, test_folder=folder)


class _ZipReader:
    """Reads members of a zip; each worker process opens its own handle."""

    def __init__(self, path: str):
        self.path, self._zip, self._pid = path, None, None

    def __call__(self, name: str) -> bytes:
        if self._zip is None or self._pid != os.getpid():
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip.read(name)

    def __getstate__(self):
        return {"path": self.path, "_zip": None, "_pid": None}


def random_resized_crop(w: int, h: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(left, top, width, height) of a random crop: torchvision's RandomResizedCrop rule."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    # the centre crop, its aspect ratio clamped to the range
    aspect = w / h
    if aspect < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif aspect > ratio[1]:
        cw, ch = int(round(h * ratio[1])), h
    else:
        cw, ch = w, h
    cw, ch = min(cw, w), min(ch, h)
    return (w - cw) // 2, (h - ch) // 2, cw, ch


class _Images(torch.utils.data.Dataset):
    """Decoded, augmented uint8 HWC images of a split; item i of epoch e draws from seed (seed, e, i).
    `raw`: a JPEG's file bytes and its crop and flip instead, for decoding on the device (see `raw_item`)."""

    def __init__(self, split: StreamSplit, size: int, augment: str, train: bool, seed: int = 0, raw: bool = False):
        self.split, self.size, self.augment, self.train, self.seed = split, size, augment, train, seed
        self.raw = raw
        src = Path(split.source)
        self.read = (lambda n: (src / n).read_bytes()) if src.is_dir() else _ZipReader(str(src))
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        from PIL import Image

        name = self.split.files[i]
        try:
            data = self.read(name)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                if self.raw and im.format == "JPEG" and im.mode == "RGB":
                    return self.raw_item(data, im.size, i)
                im = im.convert("RGB")
                out = self._augment(im, i)
        except (OSError, SyntaxError, ValueError) as e:
            raise ResgrowError(f"{self.split.source}: cannot decode {name} ({e})") from None
        pixels = torch.from_numpy(np.asarray(out, dtype=np.uint8).copy())
        return (pixels, NO_CROP, self.split.labels[i]) if self.raw else (pixels, self.split.labels[i])

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, i])

    def raw_item(self, data: bytes, size: tuple[int, int], i: int):
        """(file bytes, [left, top, width, height, flip], label): the random choices `_augment` would make, from
        the same generator, for the device to apply after decoding."""
        rng = self._rng(i)
        box = random_resized_crop(*size, rng)
        flip = int(rng.random() < 0.5)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), torch.tensor([*box, flip]), self.split.labels[i]

    def _augment(self, im, i: int):
        from PIL import Image

        s = self.size
        if not self.train:
            return fit_square(im, round(s * 8 / 7)).crop(_centre(round(s * 8 / 7), s)) if self.augment == "imagenet" \
                else fit_square(im, s)
        rng = self._rng(i)
        if self.augment == "imagenet":
            left, top, cw, ch = random_resized_crop(*im.size, rng)
            im = im.resize((s, s), Image.BILINEAR, box=(left, top, left + cw, top + ch))
        else:
            pad = 4
            canvas = Image.new("RGB", (s + 2 * pad, s + 2 * pad))
            canvas.paste(fit_square(im, s), (pad, pad))
            dx, dy = rng.integers(0, 2 * pad + 1, size=2)
            im = canvas.crop((int(dx), int(dy), int(dx) + s, int(dy) + s))
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return im


NO_CROP = torch.full((5,), -1, dtype=torch.int64)  # a raw batch's item that the worker decoded and augmented


def _collate_raw(items):
    """A raw batch: the payloads as a list (file bytes, or augmented pixels where NO_CROP), crops, labels."""
    payloads, crops, labels = zip(*items)
    return list(payloads), torch.stack(crops), torch.stack(labels)


def device_decoder(device):
    """torchvision's nvJPEG decoder for `device` (a list of JPEG byte tensors -> CHW uint8 RGB images on the
    device), or None where it is not at hand: not a CUDA device, no torchvision, or a decoder that fails on a
    small JPEG."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    try:
        from PIL import Image
        from torchvision.io import ImageReadMode, decode_jpeg

        def decode(datas):
            return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)

        probe = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 90)).save(probe, format="JPEG")
        decode([torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8)])
        return decode
    except Exception:  # no torchvision, or one without a working CUDA decoder: the workers decode
        return None


def resolve_decode(decode: str, augment: str, device):
    """(where training images are decoded, the decoder or None) for a run on `device`: "auto" picks the device
    where its decoder is at hand and the augmentation is imagenet's."""
    if decode == "host" or (decode == "auto" and augment != "imagenet"):
        return "host", None
    decoder = device_decoder(device)
    if decoder is None and decode == "device":
        raise ResgrowError(f"--decode device needs a CUDA device and torchvision's nvJPEG decoder; {device} has none "
                           "(use --decode host)")
    return ("device", decoder) if decoder is not None else ("host", None)


def place_crops(images, crops: list, out: torch.Tensor) -> None:
    """Crop, resize (bilinear, antialiased) and flip decoded CHW uint8 `images` into rows of `out` (B, S, S, 3
    uint8) by `crops` ([left, top, width, height, flip] per row): images[j] goes to the j-th row whose crop is
    set (left >= 0)."""
    size = out.shape[1]
    rows = [(k, c) for k, c in enumerate(crops) if c[0] >= 0]
    for (k, (left, top, w, h, flip)), img in zip(rows, images):
        crop = img[:, top:top + h, left:left + w].unsqueeze(0).float()
        res = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        if flip:
            res = res.flip(-1)
        out[k].copy_(res.round_().clamp_(0, 255).permute(1, 2, 0))


class _DeviceCrops:
    """Training batches decoded and augmented on the device, one batch ahead on a side stream (CUDA), so the work
    overlaps the step that trains on the batch before."""

    def __init__(self, decoder, batch_size: int, size: int, device):
        self.decode, self.device = decoder, device
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.x = torch.zeros(batch_size, size, size, 3, dtype=torch.uint8, device=device)
        self.y = torch.zeros(batch_size, dtype=torch.int64, device=device)
        self.taken = None  # CUDA: the event after which the step's buffers hold this batch, and these may change

    def prepare(self, payloads: list, crops: torch.Tensor, labels: torch.Tensor) -> None:
        if self.side is None:
            return self._prepare(payloads, crops, labels)
        # The decoder's outputs are allocated on the calling stream but written on a stream of its own: nothing of
        # ours may still be pending on the side stream, or it could be handed a block that work still reads.
        self.side.synchronize()
        with torch.cuda.stream(self.side):
            if self.taken is not None:
                self.side.wait_event(self.taken)
            self._prepare(payloads, crops, labels)

    def _prepare(self, payloads, crops, labels) -> None:
        crops = crops.tolist()  # a host tensor: read once per batch
        jpegs = [p for p, c in zip(payloads, crops) if c[0] >= 0]
        place_crops(self.decode(jpegs) if jpegs else [], crops, self.x)
        for k, (p, c) in enumerate(zip(payloads, crops)):
            if c[0] < 0:  # decoded and augmented by the worker
                self.x[k].copy_(p, non_blocking=True)
        self.y.copy_(labels, non_blocking=True)

    def take(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The prepared batch into the step's buffers (x, y), on the current stream."""
        if self.side is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.side)
        x.copy_(self.x)
        y.copy_(self.y)
        if self.side is not None:
            self.taken = torch.cuda.Event()
            self.taken.record()


def _centre(outer: int, inner: int) -> tuple[int, int, int, int]:
    a = (outer - inner) // 2
    return a, a, a + inner, a + inner


def _workers(n: int | None) -> int:
    return min(8, os.cpu_count() or 1) if n is None else n


class StreamLoader:
    """Training batches from the files, in static device buffers: `stage()` (before each step) puts the next
    batch there; `next_batch()` (inside the step) normalises it. The epoch's seeded permutation is sharded
    over the ranks as the device loader's is."""

    def __init__(self, data: StreamData, batch_size: int, device, mean, std, *, seed: int = 0,
                 channels_last: bool = False, rank: int = 0, world: int = 1, workers: int | None = None, decoder=None):
        self.data, self.device, self.seed, self.rank, self.world = data, torch.device(device), seed, rank, world
        self.n, self.h, self.w = len(data.train), data.size, data.size
        self.workers = _workers(workers)
        if data.decode == "device" and decoder is None:
            decoder = resolve_decode("device", data.augment, self.device)[1]
        self.decoder = decoder if data.decode == "device" else None  # decode training batches on the device
        self.images = _Images(data.train, data.size, data.augment, True, seed, raw=self.decoder is not None)
        self.crops = None
        self.normalize = _Normalize(mean, std, self.device, channels_last)
        self.step = torch.zeros(1, dtype=torch.int64, device=self.device)  # the step runner saves it around a capture
        self.wait_seconds = 0.0  # this epoch's time waiting for the workers
        self._it = None
        self.resize(batch_size)

    def resize(self, batch_size: int) -> None:
        if batch_size < 1 or batch_size * self.world > self.n:
            raise ResgrowError(f"batch size {batch_size} must be between 1 and the number of training images "
                               f"({self.n})")
        self.batch_size, self.steps = batch_size, self.n // (batch_size * self.world)
        self.x = torch.zeros(batch_size, self.h, self.w, 3, dtype=torch.uint8, device=self.device)
        self.y = torch.zeros(batch_size, dtype=torch.int64, device=self.device)
        if self.decoder is not None:
            self.crops = _DeviceCrops(self.decoder, batch_size, self.h, self.device)

    def start_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        b, m = self.batch_size, self.steps * self.batch_size * self.world
        order = torch.randperm(self.n, generator=g)[:m].view(self.steps, self.world, b)[:, self.rank].reshape(-1)
        self.images.epoch = epoch
        pin = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(self.images, batch_size=b, sampler=order.tolist(),
                                             num_workers=self.workers, pin_memory=pin, drop_last=True,
                                             prefetch_factor=4 if self.workers else None,
                                             collate_fn=_collate_raw if self.crops else None)
        self._it, self.wait_seconds = iter(loader), 0.0
        self._staged = self._prepared = 0  # batches of this epoch in the step's buffers / prepared on the device
        self.step.zero_()

    def _next(self):
        t0 = time.perf_counter()
        batch = next(self._it)
        self.wait_seconds += time.perf_counter() - t0
        return batch

    def stage(self) -> None:
        """The next batch into the static buffers (a non-blocking copy from pinned memory on CUDA; decoded on the
        device, the batch prepared one step ahead)."""
        if self.crops is None:
            x, y = self._next()
            self.x.copy_(x, non_blocking=True)
            self.y.copy_(y, non_blocking=True)
            return
        if self._prepared == self._staged:  # the epoch's first batch
            self.crops.prepare(*self._next())
            self._prepared += 1
        self.crops.take(self.x, self.y)
        self._staged += 1
        if self._prepared < self.steps:  # the next one, while the step trains on this one
            self.crops.prepare(*self._next())
            self._prepared += 1

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.step.add_(1)
        return self.normalize(self.x), self.y


class StreamEval:
    """Evaluation batches from the files (this rank's every world-th image), prepared by the workers."""

    def __init__(self, split: StreamSplit, size: int, augment: str, batch_size: int, device, mean, std,
                 channels_last: bool = False, rank: int = 0, world: int = 1, workers: int | None = None):
        self.images = _Images(split, size, augment, False)
        self.indices = list(range(rank, len(split), world))
        self.batch_size, self.device, self.workers = batch_size, torch.device(device), _workers(workers)
        self.normalize = _Normalize(mean, std, self.device, channels_last)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        loader = torch.utils.data.DataLoader(self.images, batch_size=self.batch_size, sampler=self.indices,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda")
        for x, y in loader:
            yield self.normalize(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)


def throughput(data: StreamData, workers: int, batch_size: int = 256, batches: int = 20, seed: int = 0) -> float:
    """Images per second that `workers` host processes read, decode and augment (training augmentation),
    after one warm-up batch; no device involved."""
    loader = StreamLoader(data, batch_size, "cpu", IMAGENET_MEAN, IMAGENET_STD, seed=seed, workers=workers)
    loader.start_epoch(0)
    batches = min(batches, loader.steps - 1)
    if batches < 1:
        raise ResgrowError(f"{data.name} has too few images for two batches of {batch_size}")
    loader.stage()
    t0 = time.perf_counter()
    for _ in range(batches):
        loader.stage()
    return batches * batch_size / (time.perf_counter() - t0)
