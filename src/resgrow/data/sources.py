"""Datasets to uint8 tensors: CIFAR-10/100 (python format) and ImageFolder trees (directory or zip), Tiny-ImageNet's
layout as distributed included.

Images come back as uint8 NHWC tensors (the layout PIL decodes to, and the one the device loader
gathers from), labels as int64. Decoded ImageFolder data is cached as an .npz in a cache directory
($RESGROW_CACHE, default ~/.cache/resgrow; never beside the data, which may be shared) so the
second run starts in about a second. The cache key is the source's path, size and mtime; for a
directory, the relative path, size and mtime of every file in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_open
from ..errors import ResgrowError

CACHE_VERSION = 2  # 2: images in subfolders of a class folder count (a cache of 1 left them out)
OS_JUNK = {"__MACOSX", "Thumbs.db", "desktop.ini"}  # what file managers leave in folders; hidden files too
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".webp", ".tif", ".tiff"}
LAYOUT_HINT = "expected train/<class>/<image> and test/<class>/<image> or val/<class>/<image> (ImageFolder layout)"


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x H x W x C
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train: Split
    test: Split
    val: Split | None = None
    test_folder: str = "test"  # an ImageFolder without test/ takes its val/ folder as the test split

    streamed = False  # kept in memory (data/stream.py's StreamData is read from its files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the training images."""
        return tuple(self.train.images.shape[1:])

    def summary(self) -> str:
        n, h, w, c = self.train.images.shape
        val = f", {len(self.val)} val" if self.val is not None else ""
        test = f"{len(self.test)} test" + (f" (its {self.test_folder}/ folder)" if self.test_folder != "test" else "")
        return f"{self.name}: {n} train{val}, {test}, {h}x{w}x{c}, {self.num_classes} classes"


def default_cache_dir() -> Path:
    return Path(os.environ.get("RESGROW_CACHE", Path.home() / ".cache" / "resgrow"))


# Named data that ships inside the package (see data/samples/README.md), so the quick start runs offline.
SAMPLES = {"cifar10-sample": Path(__file__).parent / "samples" / "cifar10-sample.zip"}
NAMED = "cifar10, cifar100, cifar10-sample"


def data_source(source: str | os.PathLike) -> str:
    """How a run records its data: a name (cifar10, cifar10-sample) as given, a path made absolute, so that
    `resgrow eval RUN` and `--resume` find it from any directory."""
    name = str(source)
    if name.lower() in ("cifar10", "cifar100", *SAMPLES):
        return name
    return str(Path(name).expanduser().resolve())


def check_recorded_data(source: str, where: str) -> None:
    """Data named by a run's records (not by the user) must still be where the run found it."""
    if str(source).lower() not in ("cifar10", "cifar100", *SAMPLES) and not Path(source).exists():
        raise ResgrowError(f"data path {source!r} (recorded by {where}) does not exist: the data has moved or "
                           "was removed; pass --data with where it is now")


def load_dataset(source: str | os.PathLike, root: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, val_size: int = 0, seed: int = 0,
                 progress: bool = False, image_size: int | None = None) -> Dataset:
    """`source` is "cifar10", "cifar100", "cifar10-sample" (2,500 real CIFAR-10 images that ship with
    resgrow), or a path to an ImageFolder directory or zip.

    `root` is where the CIFAR python-format folders live (default ./data). `val_size` images are
    carved out of train (seeded) as a validation split. `image_size` N brings every image of an
    ImageFolder to N x N when it is decoded (shorter side to N, then the centre crop), so folders
    of mixed sizes load; images already N x N are kept as they are.
    """
    name = str(source)
    if image_size is not None and image_size < 1:
        raise ResgrowError(f"image size must be a positive number of pixels, not {image_size}")
    if name.lower() in ("cifar10", "cifar100"):
        if image_size not in (None, 32):
            raise ResgrowError(f"{name} images are 32x32; an image size ({image_size}) applies to ImageFolder data "
                               "only")
        ds = load_cifar(name.lower(), Path(root or "data"))
    else:
        path = SAMPLES.get(name.lower(), Path(name))
        if not path.exists():
            raise ResgrowError(f"data path {name!r} does not exist (use {NAMED}, an ImageFolder directory or a zip)")
        ds = _cached_imagefolder(path, Path(cache_dir) if cache_dir else None, progress, image_size)
    if val_size:
        ds = with_validation(ds, val_size, seed)
    return ds


def with_validation(ds: Dataset, n: int, seed: int) -> Dataset:
    """Move `n` seeded-random training images into a validation split."""
    if not 0 < n < len(ds.train):
        raise ResgrowError(f"validation size {n} must be between 1 and {len(ds.train) - 1}")
    perm = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(seed))
    tr, va = perm[n:].sort().values, perm[:n].sort().values
    t = ds.train
    return dataclasses.replace(ds, train=Split(t.images[tr], t.labels[tr]), val=Split(t.images[va], t.labels[va]))


# ---------------------------------------------------------------- CIFAR (python pickle batches)

_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}


def load_cifar(name: str, root: Path) -> Dataset:
    folder, train_files, test_files, label_key, meta_file, names_key = _CIFAR[name]
    base = root / folder
    if not base.is_dir():
        _try_download(name, root)
    missing = [f for f in train_files + test_files + [meta_file] if not (base / f).is_file()]
    if missing:
        raise ResgrowError(f"{name} not found: expected the python-format folder {base} with "
                           f"{', '.join(train_files + test_files)} and {meta_file} (missing: {', '.join(missing)}); "
                           "download it from the dataset site, or install torchvision and go online, or pass an "
                           "ImageFolder directory/zip as --data")

    def read(files):
        xs, ys = [], []
        for f in files:
            # The official CIFAR format is pickled numpy; it is only ever read from the user's own data folder.
            with open(base / f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.extend(d[label_key])
        return Split(torch.from_numpy(np.ascontiguousarray(np.concatenate(xs))), torch.tensor(ys, dtype=torch.int64))

    with open(base / meta_file, "rb") as fh:
        classes = [c.decode() for c in pickle.load(fh, encoding="bytes")[names_key]]
    return Dataset(name, classes, read(train_files), read(test_files))


def _try_download(name: str, root: Path) -> None:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        return
    try:
        (tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100)(str(root), train=True, download=True)
    except Exception:  # offline or blocked: the caller reports the missing layout
        pass


# ---------------------------------------------------------------- ImageFolder (directory or zip)

def _fingerprint(path: Path) -> str:
    """Size and mtime of a file, or of every file under a directory (an edit anywhere in it counts)."""
    if not path.is_dir():
        st = path.stat()
        return f"{st.st_size}|{st.st_mtime_ns}"
    h = hashlib.blake2b(digest_size=16)
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            f = os.path.join(root, name)
            st = os.stat(f)
            h.update(f"{os.path.relpath(f, path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cached_imagefolder(path: Path, cache_dir: Path | None, progress: bool, image_size: int | None = None) -> Dataset:
    sized = f"|{image_size}" if image_size else ""
    what = f"{path.resolve()}|{_fingerprint(path)}|{CACHE_VERSION}{sized}"
    key = hashlib.blake2b(what.encode(), digest_size=6).hexdigest()
    cache = (cache_dir or default_cache_dir()) / f"{path.name}.{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                classes = [str(s) for s in z["classes"]]
                split = lambda s: Split(torch.from_numpy(z[f"{s}_x"]), torch.from_numpy(z[f"{s}_y"]))  # noqa: E731
                return Dataset(path.stem, classes, split("train"), split("test"), test_folder=str(z["test_folder"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache is rebuilt from the source below
    ds = read_imagefolder(path, progress, image_size)
    try:  # the cache only saves time: failing to write it is not an error
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(cache, "wb") as f:
            np.savez(f, classes=np.array(ds.classes), train_x=ds.train.images.numpy(), train_y=ds.train.labels.numpy(),
                     test_x=ds.test.images.numpy(), test_y=ds.test.labels.numpy(), test_folder=np.array(ds.test_folder))
    except OSError as e:  # a full disk or a home quota: say it, or every run decodes again without a word why
        print(f"resgrow: note: cannot cache the decoded images in {cache.parent} ({e.strerror or e}); the next run "
              "decodes them again (--cache-dir or RESGROW_CACHE chooses another folder)", file=sys.stderr)
    return ds


def read_imagefolder(path: Path, progress: bool = False, image_size: int | None = None) -> Dataset:
    """Decode every image of an ImageFolder tree (directory or zip) into uint8 tensors (N x N with `image_size`)."""
    if path.is_dir():
        files = {p.relative_to(path).as_posix(): p for p in path.rglob("*") if p.is_file()}
        reader = lambda key: files[key].read_bytes()  # noqa: E731
        names, source = list(files), None
    else:
        try:
            source = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            hint = ""
            if path.name.endswith((".tar", ".tar.gz", ".tgz")):  # CIFAR's own download is a python-format tarball
                hint = ("; a CIFAR tarball (cifar-10-python.tar.gz) is read unpacked: extract it into a folder DIR and "
                        "pass --data cifar10 (or cifar100) --data-dir DIR")
            raise ResgrowError(f"{path} is neither a directory nor a readable zip file ({e}){hint}") from None
        names = [i.filename for i in source.infolist() if not i.is_dir()]
        reader = source.read
    try:
        split_files, test_folder = _layout(names, path, reader)
        classes = sorted({c for c, _ in split_files["train"]})
        extra = sorted({c for c, _ in split_files["test"]} - set(classes))
        if extra:
            raise ResgrowError(f"{path}: test classes {extra} do not appear in train; {LAYOUT_HINT}")
        blobs = {split: [(classes.index(c), f, reader(f)) for c, f in sorted(items)]
                 for split, items in split_files.items()}
    finally:
        if source is not None:
            source.close()
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        splits = {s: _decode_split(path, b, pool, progress, image_size) for s, b in blobs.items()}
    shapes = {tuple(s.images.shape[1:]) for s in splits.values()}
    if len(shapes) != 1:
        raise ResgrowError(f"{path}: train and test images differ in size {sorted(shapes)}; pass an image size "
                           "(--image-size N) to bring them to N x N")
    return Dataset(path.stem, classes, splits["train"], splits["test"], test_folder=test_folder)


def _layout(names: list[str], path: Path, read) -> tuple[dict[str, list[tuple[str, str]]], str]:
    """Find train/<class>/<file> and test/<class>/<file>, allowing one top-level folder around them. A file in
    a subfolder of a class folder belongs to that class (as in torchvision's ImageFolder), rather than being
    left out without a word. Without test/, a val/ folder is the test split (train/ + val/ is a common layout);
    so it is when test/ holds only unlabelled images (test/images/, as Tiny-ImageNet's). Tiny-ImageNet as
    distributed has a layout of its own (`_tiny_imagenet`)."""
    names = [n for n in names if not any(p.startswith(".") or p in OS_JUNK for p in n.split("/"))]
    tiny = _tiny_imagenet(names, path, read)
    if tiny is not None:
        return tiny
    for prefix_len in (0, 1):
        out: dict[str, list[tuple[str, str]]] = {"train": [], "test": [], "val": []}
        for n in names:
            parts = n.split("/")
            if len(parts) >= prefix_len + 3 and parts[prefix_len] in out:
                out[parts[prefix_len]].append((parts[prefix_len + 1], n))
        if _unlabelled(out["test"], out["train"]) and out["val"]:
            out["test"] = []
        folder = "test" if out["test"] else "val"
        if out["train"] and out[folder]:
            return {"train": out["train"], "test": out[folder]}, folder
    raise ResgrowError(f"{path}: no train/ and test/ (or val/) class folders found; {LAYOUT_HINT}")


TINY_LABELS = "val/val_annotations.txt"


def _unlabelled(split: list[tuple[str, str]], train: list[tuple[str, str]]) -> bool:
    """A split whose one "class" is a folder named images that train does not have: images without labels."""
    return {c for c, _ in split} == {"images"} and all(c != "images" for c, _ in train)


def _tiny_imagenet(names: list[str], path: Path, read) -> tuple[dict[str, list[tuple[str, str]]], str] | None:
    """Tiny-ImageNet as distributed (tiny-imagenet-200.zip, LipGrow's second dataset): train/<wnid>/images/<image>
    with a <wnid>_boxes.txt beside them, val/images/<image> labelled by val/val_annotations.txt (image, wnid,
    box), test/images/<image> without labels. Its val/ is the test split; the box files are annotations, not
    images, and are left out. A val/ already sorted into val/<wnid>/ folders (a common preparation script)
    counts as it is. None for any other layout (a test/ with class folders is an ImageFolder's)."""
    found = [n for n in names if n == TINY_LABELS or (n.endswith("/" + TINY_LABELS) and n.count("/") == 2)]
    if len(found) != 1:
        return None
    root = found[0][:-len(TINY_LABELS)]
    rel = [(n[len(root):].split("/"), n) for n in names if n.startswith(root)]
    if any(p[0] == "test" and (len(p) != 3 or p[1] != "images") for p, _ in rel):
        return None
    labels = {}
    for line in read(found[0]).decode("utf-8", "replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            labels[fields[0]] = fields[1]
    train, val = [], []
    for p, n in rel:
        if p[0] not in ("train", "val") or len(p) < 3 or p[-1] == f"{p[1]}_boxes.txt":
            continue
        if p[0] == "val" and p[1] == "images" and len(p) == 3:
            if p[2] not in labels:
                raise ResgrowError(f"{path}: {n} has no label in {found[0]}")
            val.append((labels[p[2]], n))
        else:  # train/<wnid>/..., or val/ sorted into class folders
            (train if p[0] == "train" else val).append((p[1], n))
    return ({"train": train, "test": val}, "val") if train and val else None


def fit_square(im, size: int):
    """Shorter side to `size` (bilinear, antialiased), then the centre `size` x `size` crop:
    torchvision's Resize(size) + CenterCrop(size)."""
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def _decode_split(path: Path, blobs: list[tuple[int, str, bytes]], pool: ThreadPoolExecutor, progress: bool,
                  image_size: int | None = None) -> Split:
    from PIL import Image, UnidentifiedImageError

    def decode(item):
        _, fname, data = item
        if Path(fname).suffix.lower() not in IMAGE_SUFFIXES:
            raise ResgrowError(f"{path}: {fname} is not an image file ({LAYOUT_HINT})")
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
                return np.asarray(fit_square(im, image_size) if image_size else im)
        except UnidentifiedImageError:  # its message names an in-memory buffer, not the file
            raise ResgrowError(f"{path}: cannot decode {fname} (not an image format Pillow reads)") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ResgrowError(f"{path}: cannot decode {fname} ({e})") from None

    it = pool.map(decode, blobs, chunksize=256)
    if progress and sys.stderr.isatty():  # a bar's \r updates would litter a redirected log
        try:
            from tqdm import tqdm
            it = tqdm(it, total=len(blobs), desc=f"decoding {path.name}", unit="img", leave=False)
        except ImportError:
            pass
    arrays = list(it)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ResgrowError(f"{path}: images differ in size ({', '.join(map(str, sorted(shapes)[:3]))}, ...); pass an "
                           "image size (--image-size N) to bring them to N x N")
    images = torch.from_numpy(np.stack(arrays))
    labels = torch.tensor([label for label, _, _ in blobs], dtype=torch.int64)
    return Split(images, labels)
