import os
import tempfile
from pathlib import Path

import pytest
import torch

# CLI runs inside tests must not write decoded-data caches into the user's home.
os.environ.setdefault("RESGROW_CACHE", tempfile.mkdtemp(prefix="resgrow-test-cache-"))
# Under pytest-xdist (`-n auto`) the cores are shared among the workers: each takes its part, so that they do not
# oversubscribe the CPU.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, (os.cpu_count() or 1) // _workers))))

from resgrow.data import load_dataset  # noqa: E402
from resgrow.models import ArchSpec  # noqa: E402

# A ResNet-8 with narrow stages: the same code paths as resnet20, a fraction of the CPU time.
TINY = ArchSpec("basic", (1, 1, 1), (8, 16, 32), stem_width=8)


def cfg(**kw):
    """The tests' training settings: short, small batches, CPU, quiet, fp32. fp32 whatever the CPU: bf16 autocast
    (the default where the CPU computes bf16 natively) is exact run to run too, but the tests must train alike on
    every CPU; the bf16 path has tests of its own (test_cpu_precision.py)."""
    from resgrow.train import TrainConfig

    return TrainConfig(**{**dict(epochs=3, batch_size=50, lr=0.1, device="cpu", quiet=True, precision="fp32"), **kw})


def tiny(seed=0):
    """TINY, initialised from `seed`."""
    from resgrow.models import ResNet

    torch.manual_seed(seed)
    return ResNet(TINY)


def weights(trainer):
    """A copy of the trainer's model weights and buffers, to compare runs."""
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.fixture(scope="session")
def mini_zip() -> Path:
    """2,000 + 500 real CIFAR-10 images: the sample that ships with resgrow, or the cifar10-jpeg-mini.zip
    (the same images) in the folder that RESGROW_TEST_DATA names, when it is set."""
    folder = os.environ.get("RESGROW_TEST_DATA")
    if not folder:
        from resgrow.data.sources import SAMPLES

        return SAMPLES["cifar10-sample"]
    path = Path(folder) / "cifar10-jpeg-mini.zip"
    assert path.is_file(), f"RESGROW_TEST_DATA is set but {path} does not exist"
    return path


@pytest.fixture(scope="session")
def mini(mini_zip, tmp_path_factory):
    return load_dataset(mini_zip, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def small(small_zip, tmp_path_factory):
    """The small zip's 400 + 100 images, loaded: for training runs that only need to be exact, not long."""
    return load_dataset(small_zip, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def small_zip(mini_zip, tmp_path_factory) -> Path:
    """40 train and 10 test images per class from the mini zip: for CLI runs that only need to work."""
    import zipfile

    out = tmp_path_factory.mktemp("small") / "small.zip"
    with zipfile.ZipFile(mini_zip) as src, zipfile.ZipFile(out, "w") as dst:
        kept: dict = {}
        for name in sorted(src.namelist()):
            parts = name.split("/")
            if len(parts) != 3 or not parts[2]:
                continue
            key = (parts[0], parts[1])
            if kept.get(key, 0) < (40 if parts[0] == "train" else 10):
                kept[key] = kept.get(key, 0) + 1
                dst.writestr(name, src.read(name))
    return out
