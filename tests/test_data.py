import io
import os
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resgrow.data.sources as sources
from resgrow.data import DeviceLoader, EvalLoader, channel_stats, load_dataset
from resgrow.errors import ResgrowError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_mini_zip_counts_labels_and_class_order(mini):
    assert mini.classes == CLASSES
    assert mini.train.images.shape == (2000, 32, 32, 3) and mini.train.images.dtype == torch.uint8
    assert mini.test.images.shape == (500, 32, 32, 3)
    assert torch.bincount(mini.train.labels).tolist() == [200] * 10
    assert torch.bincount(mini.test.labels).tolist() == [50] * 10


def test_decoded_pixels_match_the_jpeg(mini_zip, mini):
    with zipfile.ZipFile(mini_zip) as z:
        name = sorted(n for n in z.namelist() if n.startswith("train/cat/"))[0]
        expected = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB"))
    first_cat = int((mini.train.labels == CLASSES.index("cat")).nonzero()[0])
    assert np.array_equal(mini.train.images[first_cat].numpy(), expected)


def test_cache_is_reused(mini_zip, tmp_path, monkeypatch):
    load_dataset(mini_zip, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(sources, "read_imagefolder", boom)
    again = load_dataset(mini_zip, cache_dir=tmp_path)
    assert len(again.train) == 2000 and again.classes == CLASSES


def test_a_cache_that_cannot_be_written_is_a_note_not_an_error(mini_zip, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    ds = load_dataset(mini_zip, cache_dir=tmp_path / "a_file" / "cache")
    assert len(ds.train) == 2000
    said = capsys.readouterr().err
    assert said.startswith("resgrow: note: cannot cache the decoded images in ") and "decodes them again" in said


def test_cache_is_not_reused_for_a_file_rewritten_at_the_same_size(mini_zip, tmp_path):
    copy = tmp_path / "data.zip"
    shutil.copyfile(mini_zip, copy)
    load_dataset(copy, cache_dir=tmp_path / "c")
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size, new mtime: maybe new images
    load_dataset(copy, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.npz"))) == 2


def test_validation_split(mini_zip, tmp_path):
    ds = load_dataset(mini_zip, cache_dir=tmp_path, val_size=300, seed=1)
    assert len(ds.train) == 1700 and len(ds.val) == 300
    rows = lambda s: {bytes(x.numpy().tobytes()) for x in s.images}  # noqa: E731
    assert not rows(ds.train) & rows(ds.val)


def _loader(mini, **kw):
    mean, std = channel_stats(mini.train.images)
    return DeviceLoader(mini.train, 64, "cpu", mean, std, **kw)


def test_augmentation_is_a_seeded_crop_and_flip(mini):
    loader = _loader(mini, seed=3)
    loader.start_epoch(0)
    x, y = loader.next_batch()
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (64,)
    # Recompute every image by hand from the epoch's order, offsets and flips.
    idx, off, flip = loader.order[0], loader.offsets[0], loader.flips[0, :, 0]
    padded = torch.nn.functional.pad(mini.train.images[idx].permute(0, 3, 1, 2).float(), (4, 4, 4, 4))
    for k in range(64):
        dy, dx = off[k].tolist()
        crop = padded[k, :, dy:dy + 32, dx:dx + 32]
        if flip[k]:
            crop = crop.flip(-1)
        manual = (crop - loader.normalize.mean[0]) * loader.normalize.inv_std[0]
        torch.testing.assert_close(x[k], manual)
    assert torch.equal(y, mini.train.labels[idx])
    assert 0 < flip.sum() < 64 and off.min() >= 0 and off.max() <= 8 and len(set(off.flatten().tolist())) > 3

    same = _loader(mini, seed=3)
    same.start_epoch(0)
    torch.testing.assert_close(same.next_batch()[0], x)
    same.start_epoch(1)
    assert not torch.equal(same.next_batch()[0], x)
    other = _loader(mini, seed=4)
    other.start_epoch(0)
    assert not torch.equal(other.next_batch()[0], x)


def test_epoch_covers_every_image_once_and_drops_the_remainder(mini):
    loader = _loader(mini, augment=False)
    loader.start_epoch(0)
    assert loader.steps == 2000 // 64
    seen = torch.cat([loader.order[i] for i in range(loader.steps)])
    assert len(set(seen.tolist())) == loader.steps * 64
    x, _ = loader.next_batch()
    assert torch.equal(loader.step, torch.tensor([1]))


def test_eval_loader_is_normalised(mini):
    mean, std = channel_stats(mini.train.images)
    xs = torch.cat([x for x, _ in EvalLoader(mini.train, 512, "cpu", mean, std)])
    assert xs.shape == (2000, 3, 32, 32)
    assert xs.mean(dim=(0, 2, 3)).abs().max() < 1e-3 and (xs.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2


def _jpeg(color=(255, 0, 0), size=32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG")
    return buf.getvalue()


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_small_zip_and_directory(tmp_path):
    files = {"ds/train/a/0.jpg": _jpeg(), "ds/train/b/0.jpg": _jpeg((0, 255, 0)), "ds/test/a/0.jpg": _jpeg(),
             "ds/test/b/1.jpg": _jpeg((0, 0, 255)), "__MACOSX/._junk": b"x", "ds/README.txt": b"not in a class folder",
             "ds/train/a/Thumbs.db": b"x", "ds/test/b/.DS_Store": b"x"}
    ds = load_dataset(_zip(tmp_path / "d.zip", files), cache_dir=tmp_path / "c")
    assert ds.classes == ["a", "b"] and ds.train.labels.tolist() == [0, 1] and len(ds.test) == 2
    for name, data in files.items():
        if name.startswith("ds/"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(data)
    ds2 = load_dataset(tmp_path / "ds", cache_dir=tmp_path / "c")
    assert torch.equal(ds2.train.images, ds.train.images)
    # an image added deep inside the directory must not be hidden by the cache
    (tmp_path / "ds/train/b/2.jpg").write_bytes(_jpeg((0, 0, 255)))
    ds3 = load_dataset(tmp_path / "ds", cache_dir=tmp_path / "c")
    assert ds3.train.labels.tolist() == [0, 1, 1]
    # an image in a subfolder of a class folder belongs to that class, as in torchvision's ImageFolder
    (tmp_path / "ds/train/a/more").mkdir()
    (tmp_path / "ds/train/a/more/3.jpg").write_bytes(_jpeg((0, 255, 0)))
    ds4 = load_dataset(tmp_path / "ds", cache_dir=tmp_path / "c")
    assert ds4.classes == ["a", "b"] and ds4.train.labels.tolist() == [0, 0, 1, 1]
    # train/ and val/: val is the test split; with test/ as well, test/ is (val/ is then not read)
    both = _zip(tmp_path / "tv.zip", {"train/a/0.jpg": _jpeg(), "train/a/1.jpg": _jpeg(), "val/a/0.jpg": _jpeg(),
                                      "val/a/1.jpg": _jpeg()})
    for _ in range(2):  # decoded, then from the cache: the summary says where the test split came from
        tv = load_dataset(both, cache_dir=tmp_path / "c")
        assert len(tv.test) == 2 and "2 train, 2 test (its val/ folder)," in tv.summary(), tv.summary()
    tv = load_dataset(both, cache_dir=tmp_path / "c", val_size=1)  # a validation split carved out of train as well
    assert "1 train, 1 val, 2 test (its val/ folder)," in tv.summary(), tv.summary()
    both = _zip(tmp_path / "tvt.zip", {"train/a/0.jpg": _jpeg(), "val/a/0.jpg": _jpeg(), "val/a/1.jpg": _jpeg(),
                                       "test/a/0.jpg": _jpeg()})
    assert len(load_dataset(both, cache_dir=tmp_path / "c").test) == 1


@pytest.mark.parametrize("bad_name,bad_data,match", [
    ("train/a/1.jpg", b"\xff\xd8 this is not a jpeg", r"cannot decode train/a/1.jpg \(not an image format Pillow reads\)$"),
    ("train/a/2.png", b"GIF89a" + bytes(20), r"cannot decode train/a/2.png \((?!.*BytesIO).*\)$"),
    ("train/a/notes.txt", b"hello", "train/a/notes.txt is not an image"),
])
def test_corrupt_or_non_image_file_in_zip(tmp_path, bad_name, bad_data, match):
    z = _zip(tmp_path / "bad.zip", {"train/a/0.jpg": _jpeg(), bad_name: bad_data, "test/a/0.jpg": _jpeg()})
    with pytest.raises(ResgrowError, match=match):
        load_dataset(z, cache_dir=tmp_path)


def test_zip_without_layout(tmp_path):
    z = _zip(tmp_path / "flat.zip", {"images/0.jpg": _jpeg(), "images/1.jpg": _jpeg()})
    with pytest.raises(ResgrowError, match=r"train/<class>/<image> and test/<class>/<image>"):
        load_dataset(z, cache_dir=tmp_path)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(ResgrowError, match="neither a directory nor a readable zip"):
        load_dataset(junk, cache_dir=tmp_path)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    tarball.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ResgrowError, match=r"extract it into a folder DIR and pass --data cifar10 \(or cifar100\) --data-dir DIR"):
        load_dataset(tarball, cache_dir=tmp_path)


def test_mixed_image_sizes_are_refused(tmp_path):
    z = _zip(tmp_path / "m.zip", {"train/a/0.jpg": _jpeg(size=32), "train/a/1.jpg": _jpeg(size=24), "test/a/0.jpg": _jpeg()})
    with pytest.raises(ResgrowError, match=r"differ in size.*--image-size N"):
        load_dataset(z, cache_dir=tmp_path)


def _bands_png(w, h) -> bytes:
    """Red top quarter, green middle half, blue bottom quarter (lossless)."""
    im = Image.new("RGB", (w, h), (0, 255, 0))
    im.paste((255, 0, 0), (0, 0, w, h // 4))
    im.paste((0, 0, 255), (0, h - h // 4, w, h))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_image_size_brings_mixed_sizes_to_one_square(tmp_path):
    z = _zip(tmp_path / "m.zip", {"train/a/0.png": _bands_png(30, 60), "train/a/1.jpg": _jpeg(size=24),
                                  "train/b/0.jpg": _jpeg((0, 0, 255), size=50), "test/a/0.jpg": _jpeg(size=16)})
    ds = load_dataset(z, cache_dir=tmp_path, image_size=16)
    assert ds.train.images.shape == (3, 16, 16, 3) and ds.test.images.shape == (1, 16, 16, 3)
    # 30x60 -> 16x32 -> the centre 16 rows: exactly the green band, away from the blended edges
    inner = ds.train.images[0, 2:14].int()
    assert (inner[..., 1] > 245).all() and (inner[..., 0] < 10).all() and (inner[..., 2] < 10).all()
    assert load_dataset(z, cache_dir=tmp_path, image_size=8).train.images.shape[1:3] == (8, 8)  # its own cache entry
    assert load_dataset(z, cache_dir=tmp_path, image_size=16).train.images.shape[1:3] == (16, 16)
    with pytest.raises(ResgrowError, match="applies to ImageFolder data only"):
        load_dataset("cifar10", root=tmp_path, image_size=64)
    with pytest.raises(ResgrowError, match="positive number of pixels"):
        load_dataset(z, cache_dir=tmp_path, image_size=0)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_python_format(tmp_path, name):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, files, label_key, meta, names_key = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], \
            b"labels", "batches.meta", b"label_names"
        classes = CLASSES
    else:  # CIFAR-100: one train and one test file, fine labels (the 100 classes) and coarse ones
        folder, files, label_key, meta, names_key = "cifar-100-python", ["train"], b"fine_labels", "meta", b"fine_label_names"
        classes = [f"class{i:03d}" for i in range(100)]
    base = tmp_path / folder
    base.mkdir()
    for f, n in [(f, 20 // len(files)) for f in files] + [("test_batch" if name == "cifar10" else "test", 3)]:
        labels = [int(x) for x in rng.integers(0, len(classes), n)]
        with open(base / f, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: labels,
                         b"coarse_labels": [0] * n}, fh)
    with open(base / meta, "wb") as fh:
        pickle.dump({names_key: [c.encode() for c in classes], b"coarse_label_names": [b"all"]}, fh)
    ds = load_dataset(name, root=tmp_path)
    assert ds.train.images.shape == (20, 32, 32, 3) and len(ds.test) == 3 and ds.classes == classes
    first = pickle.load(open(base / files[0], "rb"))
    assert np.array_equal(ds.train.images[0].numpy(), first[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert ds.train.labels[: len(first[label_key])].tolist() == first[label_key] and ds.num_classes == len(classes)


def test_missing_cifar_names_the_expected_layout(tmp_path):
    with pytest.raises(ResgrowError, match="cifar-100-python"):
        load_dataset("cifar100", root=tmp_path)
    with pytest.raises(ResgrowError, match="does not exist"):
        load_dataset(tmp_path / "nope.zip")


def test_a_dataset_too_big_for_the_gpu_is_one_clear_error(monkeypatch):
    from resgrow.data import loader

    images = torch.zeros(100, 32, 32, 3, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30 + 100 * 3072 - 1, 80 * 2**30))
    with pytest.raises(ResgrowError, match=r"training images \(0.0 GiB as uint8\) do not fit .* cuda:0 \(1.0 GiB\)"):
        loader.to_device(images, torch.device("cuda:0"), "training")
    assert loader.to_device(images, torch.device("cpu"), "training") is images  # no check, no copy on the CPU


def _tiny_imagenet_files(top="tiny-imagenet-200/"):
    """Tiny-ImageNet's layout as distributed, with two classes and 8x8 images."""
    img = lambda c: _jpeg(c, size=8)  # noqa: E731
    return {f"{top}wnids.txt": b"n01\nn02\n", f"{top}words.txt": b"n01\tgoldfish\nn02\tsalamander\n",
            f"{top}train/n01/n01_boxes.txt": b"n01_0.JPEG\t0\t0\t7\t7\n", f"{top}train/n01/images/n01_0.JPEG": img((255, 0, 0)),
            f"{top}train/n01/images/n01_1.JPEG": img((255, 0, 0)), f"{top}train/n02/n02_boxes.txt": b"n02_0.JPEG\t0\t0\t7\t7\n",
            f"{top}train/n02/images/n02_0.JPEG": img((0, 0, 255)),
            f"{top}val/val_annotations.txt": b"val_0.JPEG\tn02\t0\t0\t7\t7\nval_1.JPEG\tn01\t0\t0\t7\t7\n",
            f"{top}val/images/val_0.JPEG": img((0, 0, 255)), f"{top}val/images/val_1.JPEG": img((255, 0, 0)),
            f"{top}test/images/test_0.JPEG": img((0, 255, 0))}


@pytest.mark.parametrize("top", ["tiny-imagenet-200/", ""])
def test_tiny_imagenet_as_distributed(tmp_path, top):
    """val/ labelled by val_annotations.txt is the test split; the box files and the unlabelled test/ are left out."""
    ds = load_dataset(_zip(tmp_path / "tiny.zip", _tiny_imagenet_files(top)), cache_dir=tmp_path / "c")
    assert ds.classes == ["n01", "n02"] and ds.train.labels.tolist() == [0, 0, 1]
    assert ds.test.labels.tolist() == [0, 1] and tuple(ds.test.images.shape) == (2, 8, 8, 3)  # by class, then name
    assert ds.test.images[0, 4, 4, 0] > 200 and ds.test.images[1, 4, 4, 2] > 200  # val_1 (red) is n01, val_0 (blue) n02
    assert "3 train, 2 test (its val/ folder), 8x8x3, 2 classes" in ds.summary(), ds.summary()
    files = _tiny_imagenet_files(top)
    files[f"{top}val/images/val_2.JPEG"] = _jpeg(size=8)
    with pytest.raises(ResgrowError, match="val/images/val_2.JPEG has no label in .*val/val_annotations.txt"):
        load_dataset(_zip(tmp_path / "unlabelled.zip", files), cache_dir=tmp_path / "c")
    # val/ sorted into class folders by a preparation script: the same splits
    files = _tiny_imagenet_files(top)
    for name, wnid in (("val_0.JPEG", "n02"), ("val_1.JPEG", "n01")):
        files[f"{top}val/{wnid}/images/{name}"] = files.pop(f"{top}val/images/{name}")
    sorted_val = load_dataset(_zip(tmp_path / "sorted.zip", files), cache_dir=tmp_path / "c")
    assert sorted_val.test.labels.tolist() == [0, 1] and torch.equal(sorted_val.test.images, ds.test.images)
    # ... and without the annotations file, as an ImageFolder whose test/ holds only unlabelled images: val/ is used
    del files[f"{top}val/val_annotations.txt"]
    for wnid in ("n01", "n02"):
        del files[f"{top}train/{wnid}/{wnid}_boxes.txt"]
    plain = load_dataset(_zip(tmp_path / "plain.zip", files), cache_dir=tmp_path / "c")
    assert plain.test.labels.tolist() == [0, 1] and "2 test (its val/ folder)" in plain.summary()
    # a test/ with class folders makes it an ImageFolder, whose rules hold (a .txt in a class folder is refused)
    files = _tiny_imagenet_files(top)
    del files[f"{top}test/images/test_0.JPEG"]
    files[f"{top}test/n01/0.JPEG"] = _jpeg(size=8)
    with pytest.raises(ResgrowError, match="n01_boxes.txt is not an image file"):
        load_dataset(_zip(tmp_path / "other.zip", files), cache_dir=tmp_path / "c")


def test_the_sample_that_ships_with_resgrow_loads_by_name(tmp_path):
    ds = load_dataset("cifar10-sample", cache_dir=tmp_path)
    assert (len(ds.train), len(ds.test), ds.num_classes) == (2000, 500, 10)
    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and tuple(ds.train.images.shape[1:]) == (32, 32, 3)
    assert sources.data_source("cifar10-sample") == "cifar10-sample"  # a name is recorded as a name, a path made absolute
    assert sources.data_source("some/data.zip") == str((Path.cwd() / "some/data.zip").resolve())


@pytest.mark.parametrize("terminal", [False, True])
def test_the_decoding_bar_is_drawn_on_a_terminal_only(tmp_path, monkeypatch, capsys, terminal):
    pytest.importorskip("tqdm")
    z = _zip(tmp_path / "d.zip", {"train/a/0.jpg": _jpeg(), "test/a/0.jpg": _jpeg()})
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    load_dataset(z, cache_dir=tmp_path / "c", progress=True)
    assert ("decoding d.zip" in capsys.readouterr().err) == terminal
