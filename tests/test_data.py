"""Data: the official CIFAR python format, image folders (real CIFAR-10 JPEGs), splits and augmentation."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CIFAR_JPG, RunsCode

from lightning_nas.data.augment import BatchAugment
from lightning_nas.data.batches import IndexBatchStream
from lightning_nas.data.datamodules import SearchDataModule
from lightning_nas.data.sources import load_cifar, load_image_folder
from lightning_nas.errors import DataError


def _cifar_archive(path, n_per_batch=4, seed=0):
    """A small archive in the official cifar-10-python.tar.gz layout (pickled dicts, 3072-byte rows)."""
    rng = np.random.default_rng(seed)
    batches = {}
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj):
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, n_per_batch).tolist()
            batches[name] = (data, labels)
            add(name, {b"data": data, b"labels": labels, b"batch_label": name.encode()})
        add("batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)]})
    return batches


def test_cifar_python_format_from_archive_and_folder(tmp_path):
    batches = _cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    ds = load_cifar(tmp_path, 10)
    assert ds.train.images.shape == (20, 3, 32, 32) and ds.test.images.shape == (4, 3, 32, 32)
    first = batches["data_batch_1"][0][0]
    # channel-major rows: 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    assert torch.equal(ds.train.images[0, 1], torch.from_numpy(first[1024:2048].reshape(32, 32)))
    assert ds.train.labels[:4].tolist() == batches["data_batch_1"][1]
    assert ds.classes[3] == "class3"
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    again = load_cifar(tmp_path / "extracted", 10)
    assert torch.equal(again.train.images, ds.train.images)


def test_cifar_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_cifar(tmp_path / "empty", 10)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"definitely not a tar archive" * 100)
    with pytest.raises(DataError, match="corrupt"):
        load_cifar(tmp_path, 10)


def test_cifar_download_offline_says_where_to_put_files(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"could not download .* put it .* in"):
        load_cifar(tmp_path, 10, download=True)
    assert not any(tmp_path.iterdir())  # no partial file left behind


def _png_folder(root, size=6):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for k in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{k}.png")


def test_image_folder_decodes_once_into_the_user_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LIGHTNING_NAS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _png_folder(tmp_path / "imgs")
    ds = load_image_folder(tmp_path / "imgs")
    assert ds.classes == ["cat", "dog"] and ds.train.images.shape == (6, 3, 6, 6)
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert not list(tmp_path.glob("*.lnas-u8.pt"))  # nothing written next to the data
    (cache,) = (tmp_path / "xdg" / "lightning_nas").glob("*-imgs.lnas-u8.pt")
    assert str(cache) in capsys.readouterr().err  # says where
    assert torch.equal(load_image_folder(tmp_path / "imgs").train.images, ds.train.images)
    assert capsys.readouterr().err == ""  # read from the cache, not decoded again
    load_image_folder(tmp_path / "imgs", cache_dir=tmp_path / "mine")
    assert list((tmp_path / "mine").glob("*-imgs.lnas-u8.pt"))


def test_image_folder_corrupt_image_is_named(tmp_path):
    _png_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "train" / "cat" / "0.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="0.png"):
        load_image_folder(tmp_path / "imgs")


@pytest.mark.skipif(not CIFAR_JPG.is_file(), reason="../shared/data/cifar10-jpg.tar.gz not present")
def test_real_cifar10_jpegs():
    ds = load_image_folder(CIFAR_JPG)
    assert ds.train.images.shape == (50000, 3, 32, 32) and ds.test.images.shape == (10000, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8
    assert torch.bincount(ds.train.labels).tolist() == [5000] * 10
    assert ds.classes[0] == "airplane"
    # the data README's train-set statistics
    assert np.allclose(ds.mean, (0.4913, 0.4821, 0.4465), atol=2e-4)
    assert np.allclose(ds.std, (0.2452, 0.2428, 0.2606), atol=2e-4)


def test_augmentation_is_a_crop_and_flip_of_each_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    aug = BatchAugment(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_padding=2, hflip=True)
    out = aug(x, seed=123)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        candidates = [aug.normalize(c[None])[0]
                      for oy in range(5) for ox in range(5)
                      for c in (padded[i, :, oy:oy + 8, ox:ox + 8], padded[i, :, oy:oy + 8, ox:ox + 8].flip(2))]
        assert any(torch.equal(out[i], c) for c in candidates)
    assert torch.equal(out, aug(x, seed=123))
    assert not torch.equal(out, aug(x, seed=124))


def test_cutout_zeroes_at_most_a_square():
    x = torch.full((32, 3, 16, 16), 200, dtype=torch.uint8)
    aug = BatchAugment(mean=(0.0,) * 3, std=(1.0,) * 3, cutout_length=6)
    out = aug(x, seed=5)
    holes = (out == 0).all(1).flatten(1).sum(1)
    assert holes.max() <= 36 and holes.min() >= 9  # a 6x6 hole clipped at the border keeps >= 3x3


def test_search_split_is_disjoint_seeded_and_shared_by_ranks():
    dm = SearchDataModule(dataset="digits", seed=7)
    a, b = dm.split_indices()
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) + len(b) == len(dm.data.train)
    assert torch.equal(a, SearchDataModule(dataset="digits", seed=7).split_indices()[0])
    assert not torch.equal(a, SearchDataModule(dataset="digits", seed=8).split_indices()[0])
    seq = SearchDataModule(dataset="digits", split="sequential").split_indices()[0]
    assert torch.equal(seq, torch.arange(len(seq)))


def test_stream_shards_cover_the_epoch_and_resume_mid_epoch():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1)
    labels = torch.arange(20)
    idx = {"train": torch.arange(10), "val": torch.arange(10, 20)}
    shards = [IndexBatchStream(images, labels, idx, 2, seed=3, rank=r, world_size=2) for r in (0, 1)]
    seen = [torch.cat([b["train"][1] for b in s]) for s in shards]
    assert sorted(torch.cat(seen).tolist()) == list(range(10))
    full = [b["train"][1].tolist() for b in IndexBatchStream(images, labels, idx, 3, seed=3)]
    resumed = IndexBatchStream(images, labels, idx, 3, seed=3)
    resumed.load_state_dict({"epoch": 0, "batches": 2})
    assert [b["train"][1].tolist() for b in resumed] == full[2:]
    assert all(v >= 10 for b in IndexBatchStream(images, labels, idx, 3, seed=3) for v in b["val"][1].tolist())


def test_cifar_download_verifies_md5(tmp_path, monkeypatch):
    """The download path end to end, from a local URL: fetched, md5-checked, read; a wrong md5 is refused."""
    import hashlib

    from lightning_nas.data import sources

    src = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    src.parent.mkdir()
    _cifar_archive(src)
    good = hashlib.md5(src.read_bytes()).hexdigest()
    spec = dict(sources._CIFAR[10], url=src.as_uri(), md5=good)
    monkeypatch.setitem(sources._CIFAR, 10, spec)
    ds = load_cifar(tmp_path / "data", 10, download=True)
    assert len(ds.train) == 20 and (tmp_path / "data" / "cifar-10-python.tar.gz").is_file()
    monkeypatch.setitem(sources._CIFAR, 10, dict(spec, md5="0" * 32))
    with pytest.raises(DataError, match="md5"):
        load_cifar(tmp_path / "other", 10, download=True)
    assert not (tmp_path / "other" / "cifar-10-python.tar.gz").exists()


def test_images_live_on_the_device_when_they_fit():
    from lightning_nas.data.datamodules import resident_on_device

    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    cifar = 60_000 * 3 * 32 * 32 + 60_000 * 8
    assert resident_on_device("auto", gpu, cifar, free_bytes=70 * 2**30)
    assert not resident_on_device("auto", gpu, cifar, free_bytes=cifar)  # more than half the free memory
    assert resident_on_device("device", gpu, cifar, free_bytes=0)
    assert not resident_on_device("host", gpu, cifar, free_bytes=70 * 2**30)
    assert not resident_on_device("device", cpu, cifar)  # one memory: nothing to move


def test_resident_images_give_the_same_batches_as_host_images():
    """The stream gathers from wherever the images are: the same indices, the same pixels."""
    from lightning_nas.data.batches import IndexBatchStream

    images = torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    sets = {"train": torch.arange(20), "val": torch.arange(20, 40)}
    host = list(IndexBatchStream(images, labels, sets, 8, seed=3))
    moved = list(IndexBatchStream(images.clone().to("meta"), labels.to("meta"), sets, 8, seed=3))
    assert [b["seed"] for b in host] == [b["seed"] for b in moved]
    for a, b in zip(host, moved):
        assert b["train"][0].device.type == "meta" and a["train"][0].shape == b["train"][0].shape


def test_a_cifar_batch_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
            blob = pickle.dumps({b"data": RunsCode(marker), b"labels": [0]}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataError, match=r"names \S*open, which a data file never needs \(it could run code\)"):
        load_cifar(tmp_path, 10)
    assert not marker.exists()


def test_cifar_batches_pickled_by_python2_numpy_still_load():
    """The official batches: protocol 2, numpy arrays through ``_reconstruct``, byte-string keys."""
    from lightning_nas import safe_pickle

    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for protocol in (2, 5):
        blob = pickle.dumps({b"data": data, b"labels": [1, 2], b"batch_label": b"x"}, protocol=protocol)
        out = safe_pickle.loads(blob, encoding="bytes")
        assert np.array_equal(out[b"data"], data) and out[b"labels"] == [1, 2]


def test_a_class_sorted_split_is_validated_in_a_fixed_shuffle():
    """An image folder's test split is sorted by class: a limited validation must still see every class."""
    from lightning_nas.data.datamodules import eval_order

    sorted_labels = torch.arange(10).repeat_interleave(50)
    order = eval_order(sorted_labels)
    assert sorted(order.tolist()) == list(range(500)) and torch.equal(order, eval_order(sorted_labels))
    assert len(set(sorted_labels[order[:64]].tolist())) == 10  # the first batch holds every class
    mixed = torch.tensor([3, 1, 4, 1, 5])
    assert torch.equal(eval_order(mixed), torch.arange(5))  # any other split keeps its order


def test_image_folder_files_from_elsewhere(tmp_path):
    """16-bit PNGs keep their contrast, broken links and link loops are named, and an image replaced inside a class
    folder is seen (the cache key covers every file)."""
    from PIL import Image

    _png_folder(tmp_path / "imgs")
    cat = tmp_path / "imgs" / "train" / "cat"
    grey16 = (np.arange(36, dtype=np.uint16).reshape(6, 6) * 1800)  # 0 .. 63000
    Image.fromarray(grey16).save(cat / "0.png")  # mode I;16
    ds = load_image_folder(tmp_path / "imgs", cache_dir=tmp_path / "cache")
    decoded = ds.train.images[0, 0].numpy()
    assert np.array_equal(decoded, np.round(grey16 * 255.0 / 65535.0).astype(np.uint8))  # not all white
    # an image replaced inside a class folder: the folder's own size and time do not change, the cache key does
    pixels = np.full((6, 6, 3), 7, dtype=np.uint8)
    Image.fromarray(pixels).save(cat / "0.png")
    again = load_image_folder(tmp_path / "imgs", cache_dir=tmp_path / "cache")
    assert int(again.train.images[0].max()) == 7
    (cat / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=r"gone.png is a broken symbolic link .* remove it or restore its target"):
        load_image_folder(tmp_path / "imgs", cache_dir=tmp_path / "cache")
    (cat / "gone.png").unlink()
    (cat / "loop").symlink_to(tmp_path / "imgs" / "train")
    with pytest.raises(DataError, match=r"a symbolic link loop\): remove the link"):
        load_image_folder(tmp_path / "imgs", cache_dir=tmp_path / "cache")
