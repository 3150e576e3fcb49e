"""The whole dataset on the training device, augmented there, batched by a seeded permutation.

Every random choice of an epoch (order, crop offsets, flips) is drawn on the host from a generator
seeded by (seed, epoch) and copied to the device once per epoch. A training step then only gathers
from device buffers, so it needs no host work and can live inside a CUDA graph; and a resumed run
sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ResgrowError
from .sources import Split


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (in [0, 1] units) of uint8 NHWC images."""
    x = images.reshape(-1, images.shape[-1]).double() / 255.0
    return x.mean(0).tolist(), x.std(0).tolist()


def to_device(images: torch.Tensor, device: torch.device, what: str) -> torch.Tensor:
    """Move a split's images to the device, or say in one line that they do not fit there."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        need = images.numel() * images.element_size()
        if need > free - 2**30:  # keep a GiB for the model, its activations and the CUDA graph
            raise ResgrowError(f"the {what} images ({need / 2**30:.1f} GiB as uint8) do not fit in the free memory of "
                               f"{device} ({free / 2**30:.1f} GiB): stream them from their files (--stream), or use a "
                               "smaller --image-size")
    return images.to(device)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


class _Normalize:
    def __init__(self, mean, std, device, channels_last):
        c = len(mean)
        self.mean = torch.tensor(mean, device=device).mul(255).view(1, c, 1, 1)
        self.inv_std = torch.tensor(std, device=device).mul(255).reciprocal().view(1, c, 1, 1)
        self.channels_last = channels_last

    def __call__(self, nhwc: torch.Tensor) -> torch.Tensor:
        x = nhwc.permute(0, 3, 1, 2)  # an NCHW view with channels_last strides: no copy
        if not self.channels_last:
            x = x.contiguous()
        return (x.float() - self.mean) * self.inv_std


class DeviceLoader:
    """Training batches: random crop (zero padding `pad`) + horizontal flip + normalisation, on the device.

    `start_epoch(e)` draws the epoch's randomness; then `next_batch()` returns (x, y) for the next
    step without any host synchronisation. `steps` batches per epoch; the remainder is dropped.
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device | str, mean, std, *,
                 augment: bool = True, pad: int = 4, flip: bool = True, seed: int = 0, channels_last: bool = False,
                 rank: int = 0, world: int = 1):
        n, h, w, _ = split.images.shape
        # Several processes: each step's global batch is `world` x `batch_size` images of the epoch's one
        # permutation; this process takes slice `rank` of it.
        self.rank, self.world = rank, world
        if batch_size < 1 or batch_size > n:
            raise ResgrowError(f"batch size {batch_size} must be between 1 and the number of training images ({n})")
        self.device, self.seed = torch.device(device), seed
        self.pad, self.flip = (pad if augment else 0), (flip and augment)
        self.n, self.h, self.w = n, h, w
        images = split.images
        if self.pad:
            images = F.pad(images, (0, 0, self.pad, self.pad, self.pad, self.pad))  # zeros around H and W
        self.images = to_device(images, self.device, "training")
        self.labels = split.labels.to(self.device)
        self.normalize = _Normalize(mean, std, self.device, channels_last)
        self.step = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.rows = torch.arange(h, device=self.device)
        self.cols = torch.arange(w, device=self.device)
        self.resize(batch_size)

    def resize(self, batch_size: int) -> None:
        """Another batch size from the next epoch on (the images stay where they are); a step captured
        before reads the old buffers, so the trainer captures anew."""
        if batch_size < 1 or batch_size * self.world > self.n:
            raise ResgrowError(f"batch size {batch_size}{f' x {self.world} processes' if self.world > 1 else ''} must "
                               f"be between 1 and the number of training images ({self.n})")
        self.batch_size, self.steps = batch_size, self.n // (batch_size * self.world)
        self._m = self.steps * batch_size * self.world
        self.order = torch.zeros(self.steps, batch_size, dtype=torch.int64, device=self.device)
        self.offsets = torch.zeros(self.steps, batch_size, 2, dtype=torch.int64, device=self.device)
        self.flips = torch.zeros(self.steps, batch_size, 1, dtype=torch.bool, device=self.device)

    def start_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        m = self._m
        order = torch.randperm(self.n, generator=g)[:m]
        offsets = torch.randint(0, 2 * self.pad + 1, (m, 2), generator=g)
        flips = torch.rand(m, generator=g) < 0.5 if self.flip else torch.zeros(m, dtype=torch.bool)
        shard = lambda t: t.view(self.steps, self.world, self.batch_size, *t.shape[1:])[:, self.rank]  # noqa: E731
        # In place: a captured graph keeps reading these same buffers.
        self.order.copy_(shard(order))
        self.offsets.copy_(shard(offsets))
        self.flips.copy_(shard(flips).view_as(self.flips))
        self.step.zero_()

    def stage(self) -> None:
        """Before each step: nothing to do, the batch is gathered on the device inside the step (a streamed
        loader copies its next batch in here)."""

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.step
        idx = self.order.index_select(0, i).squeeze(0)
        off = self.offsets.index_select(0, i).squeeze(0)
        flip = self.flips.index_select(0, i).squeeze(0)
        rows = off[:, :1] + self.rows  # B x H
        cols = off[:, 1:] + torch.where(flip, self.w - 1 - self.cols, self.cols)  # B x W, flipped where asked
        x = self.images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]  # one gather: crop + flip
        self.step.add_(1)
        return self.normalize(x), self.labels[idx]


class EvalLoader:
    """Fixed-order, unaugmented batches of a split kept on the device."""

    def __init__(self, split: Split, batch_size: int, device, mean, std, channels_last: bool = False, what="test",
                 rank: int = 0, world: int = 1):
        # several processes: each evaluates every world-th image, and the sums are added up
        self.images = to_device(split.images[rank::world], device, what)
        self.labels = split.labels[rank::world].to(device)
        self.batch_size = batch_size
        self.normalize = _Normalize(mean, std, device, channels_last)

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        for i in range(0, len(self.labels), self.batch_size):
            yield self.normalize(self.images[i:i + self.batch_size]), self.labels[i:i + self.batch_size]


@dataclass
class Loaders:
    """What a run reads: the training batches, the fixed splits, and the pixel statistics they are normalised by.
    `data` is the dataset as the run reads it (a streamed set with its decoding resolved for the device)."""

    train: object  # DeviceLoader, or a StreamLoader
    test: object
    val: object | None
    mean: list
    std: list
    data: object

    @property
    def all(self) -> list:
        return [x for x in (self.train, self.test, self.val) if x is not None]


def make_loaders(data, batch_size: int, eval_batch_size: int, device, *, seed: int = 0, augment: bool = True,
                 channels_last: bool = False, workers: int | None = None, rank: int = 0, world: int = 1) -> Loaders:
    """The loaders of `data` on `device`: in memory (the whole set on the device), or streamed from its files
    (data/stream.py); `rank` of `world` processes reads its shard. The dataset given is not changed."""
    shard = dict(rank=rank, world=world)
    if data.streamed:
        from .stream import IMAGENET_MEAN, IMAGENET_STD, StreamEval, StreamLoader, resolve_decode

        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        decode, decoder = resolve_decode(data.decode, data.augment, device)  # "auto": where, said in the first line
        data = dataclasses.replace(data, decode=decode)
        train = StreamLoader(data, batch_size, device, mean, std, seed=seed, channels_last=channels_last,
                             workers=workers, decoder=decoder, **shard)
        test = StreamEval(data.test, data.size, data.augment, eval_batch_size, device, mean, std, channels_last,
                          workers=workers, **shard)
        return Loaders(train, test, None, mean, std, data)
    mean, std = channel_stats(data.train.images)
    train = DeviceLoader(data.train, batch_size, device, mean, std, augment=augment, seed=seed,
                         channels_last=channels_last, **shard)
    test, val = (EvalLoader(split, eval_batch_size, device, mean, std, channels_last, what, **shard)
                 if split is not None else None for split, what in ((data.test, "test"), (data.val, "validation")))
    return Loaders(train, test, val, mean, std, data)
