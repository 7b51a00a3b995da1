"""Whole datasets loaded into memory as uint8 NCHW tensors.

Sources: CIFAR-10/100 in the official python format (optional download with md5 check), image
folders (``train/<class>/*``, ``test/<class>/*`` as a directory or a .tar/.tar.gz archive; decoded once
and cached as a tensor file) and scikit-learn's digits (ships with scikit-learn: the offline default).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lightning_nas import safe_pickle
from lightning_nas.errors import DataError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass
class ImageData:
    """One split held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"images must be a uint8 NCHW tensor, got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    name: str
    train: ImageData
    test: ImageData
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units."""
    x = images.double().div_(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


# ---- CIFAR (official python format) ---------------------------------------------------------------
_CIFAR = {
    10: dict(url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", archive="cifar-10-python.tar.gz",
             md5="c58f30108f718f92721af3b95e74349a", folder="cifar-10-batches-py",
             train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"], label_key=b"labels",
             meta="batches.meta", names_key=b"label_names"),
    100: dict(url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", archive="cifar-100-python.tar.gz",
              md5="eb9058c3a382ffc7106e4002c42a8d85", folder="cifar-100-python",
              train=["train"], test=["test"], label_key=b"fine_labels", meta="meta", names_key=b"fine_label_names"),
}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, target: Path, md5: str) -> None:
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"could not download {url} ({err}). Without network access, download {target.name} elsewhere and "
            f"put it (or its extracted folder) in {target.parent}, then run again without download"
        ) from err
    if _md5(tmp) != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"downloaded {url} but its md5 is not {md5}: the file is corrupt; run again to retry")
    tmp.rename(target)


def _unpickle(blob: bytes, what: str) -> dict:
    """A CIFAR python batch, read without running code from it (``safe_pickle``)."""
    try:
        return safe_pickle.loads(blob, encoding="bytes")
    except safe_pickle.UnsafePickleError as err:
        raise DataError(f"{what} is not a CIFAR python batch: {err}; delete it and download the official archive "
                        "again") from err
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"{what} is not a readable CIFAR python batch ({err}); delete it and download again") from err


def load_cifar(data_dir: str | Path, num_classes: int = 10, download: bool = False) -> Dataset:
    """Read CIFAR-10/100 from ``data_dir/<cifar-…-python>/`` or the official ``.tar.gz`` in ``data_dir``."""
    spec = _CIFAR[num_classes]
    root = Path(data_dir).expanduser()
    folder, archive = root / spec["folder"], root / spec["archive"]
    members: dict[str, bytes] = {}
    names = spec["train"] + spec["test"] + [spec["meta"]]
    if folder.is_dir():
        for n in names:
            path = folder / n
            if not path.is_file():
                raise DataError(f"{path} is missing: {folder} must hold {names}; delete it and download again")
            members[n] = path.read_bytes()
    else:
        if not archive.is_file():
            if not download:
                raise DataError(
                    f"CIFAR-{num_classes} not found in {root}: put {spec['archive']} (md5 {spec['md5']}, from "
                    f"{spec['url']}) or its extracted folder {spec['folder']}/ there, or set download: true")
            _download(spec["url"], archive, spec["md5"])
        try:
            with tarfile.open(archive) as tar:
                for m in tar.getmembers():
                    base = os.path.basename(m.name)
                    if m.isfile() and base in names:
                        members[base] = tar.extractfile(m).read()  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"{archive} is corrupt ({err}); delete it and download it again") from err
        missing = [n for n in names if n not in members]
        if missing:
            raise DataError(f"{archive} lacks {missing}: it is not the official CIFAR-{num_classes} archive")

    def split(batch_names: Iterable[str]) -> ImageData:
        xs, ys = [], []
        for n in batch_names:
            d = _unpickle(members[n], f"{n} of CIFAR-{num_classes}")
            try:
                xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(d[spec["label_key"]], dtype=np.int64))
            except (KeyError, ValueError) as err:
                raise DataError(f"{n} of CIFAR-{num_classes} has an unexpected layout ({err})") from err
        return ImageData(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))

    meta = _unpickle(members[spec["meta"]], f"{spec['meta']} of CIFAR-{num_classes}")
    classes = [c.decode() for c in meta[spec["names_key"]]]
    mean, std = (CIFAR_MEAN, CIFAR_STD) if num_classes == 10 else (CIFAR100_MEAN, CIFAR100_STD)
    return Dataset(f"cifar{num_classes}", split(spec["train"]), split(spec["test"]), classes, mean, std)


# ---- image folders --------------------------------------------------------------------------------
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp")


def _decode(blob: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as img:
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: convert("RGB") would clip it to white
                wide = np.asarray(img, dtype=np.float64)
                if wide.max(initial=0) > 65535 or wide.min(initial=0) < 0:
                    raise DataError(f"image {name} holds {img.mode} values outside 0..65535: convert it to 8 or 16 "
                                    "bits per channel")
                grey = np.round(wide * (255.0 / 65535.0)).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=-1)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot decode image {name} ({err}): the file is corrupt; replace or remove it") from err


def _natural_key(path: str) -> list:
    """Sort "c/2.jpg" before "c/10.jpg", so numbered files keep their order."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _iter_image_files(root: Path) -> Iterable[tuple[str, bytes]]:
    """(relative path, bytes) for every image below ``root`` (a directory or a tar archive), in natural order."""
    if root.is_dir():
        for path in _image_paths(root):
            yield path.relative_to(root).as_posix(), path.read_bytes()
        return
    try:
        # read in archive order (a gzip stream cannot seek back cheaply), then sort by path
        files = []
        with tarfile.open(root, "r|*") as tar:
            for m in tar:
                if m.isfile() and m.name.lower().endswith(_IMAGE_EXT):
                    files.append((m.name, tar.extractfile(m).read()))  # type: ignore[union-attr]
        yield from sorted(files, key=lambda f: _natural_key(f[0]))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{root} is not a readable tar archive ({err}): the file is corrupt; fetch it again") from err


def _image_paths(root: Path) -> list[Path]:
    """The image files below the folder ``root`` in natural order, through symbolic links to folders; a broken link
    or a link loop is an error naming it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if any(a.resolve() == real for a in here.parents if a == root or root in a.parents):
            raise DataError(f"image folder {root}: {here} leads back to {real} (a symbolic link loop): remove the "
                            "link")
        dirnames.sort()
        for name in filenames:
            path = here / name
            if path.suffix.lower() not in _IMAGE_EXT:
                continue
            if not path.exists():
                raise DataError(f"image folder {root}: {path} is a broken symbolic link (to {os.readlink(path)}): "
                                "remove it or restore its target")
            out.append(path)
    return sorted(out, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def _content_key(root: Path) -> dict[str, object]:
    """What the decoded cache must match: for a folder, every image file's path, size and modification time (an
    image added, removed or replaced inside a class folder changes it); for an archive, its size and time."""
    if not root.is_dir():
        stat = root.stat()
        return {"source": str(root.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime)}
    digest = hashlib.sha1()
    for path in _image_paths(root):
        st = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return {"source": str(root.resolve()), "files": digest.hexdigest()}


def _decode_image_folder(root: Path) -> dict[str, object]:
    per_split: dict[str, dict[str, list[np.ndarray]]] = {"train": {}, "test": {}}
    for rel, blob in _iter_image_files(root):
        parts = rel.split("/")
        # accept an optional top folder inside archives: [top/]split/class/file
        for k in range(len(parts) - 2):
            if parts[k] in per_split:
                per_split[parts[k]].setdefault(parts[k + 1], []).append(_decode(blob, rel))
                break
    if not per_split["train"] or not per_split["test"]:
        raise DataError(f"{root} must contain train/<class>/<image> and test/<class>/<image> files (png or jpg); "
                        f"found {sum(len(v) for v in per_split['train'].values())} train and "
                        f"{sum(len(v) for v in per_split['test'].values())} test images")
    classes = sorted(per_split["train"])
    if len(classes) < 2:
        raise DataError(f"{root}/train has {len(classes)} class folder ({classes}): classification needs at least two "
                        "classes, one folder per class (train/<class>/<image>)")
    if set(per_split["test"]) - set(classes):
        raise DataError(f"{root}: test classes {sorted(set(per_split['test']) - set(classes))} are not in train/")
    out: dict[str, object] = {"classes": classes}
    for split, by_class in per_split.items():
        imgs, labels = [], []
        for ci, c in enumerate(classes):
            arrays = by_class.get(c, [])
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                raise DataError(f"{root}/{split}/{c}: images differ in size {sorted(shapes)}; resize them first")
            imgs.extend(arrays)
            labels.extend([ci] * len(arrays))
        shapes = {a.shape for a in imgs}
        if len(shapes) > 1:
            raise DataError(f"{root}/{split}: images differ in size {sorted(shapes)}; resize them to one size")
        out[f"{split}_x"] = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.tensor(labels, dtype=torch.long)
    return out


def default_cache_dir() -> Path:
    """$LIGHTNING_NAS_CACHE, else $XDG_CACHE_HOME/lightning_nas, else ~/.cache/lightning_nas."""
    if os.environ.get("LIGHTNING_NAS_CACHE"):
        return Path(os.environ["LIGHTNING_NAS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lightning_nas"


def _cache_path(root: Path, cache_dir: Optional[Path]) -> Path:
    """Where the decoded tensors live: ``cache_dir`` (``data.cache_dir``), else ``default_cache_dir()``; never
    next to the data, which may be shared or read-only. The file name hashes the data's absolute path."""
    name = root.name.split(".")[0] + ".lnas-u8.pt"
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{digest}-{name}"


def load_image_folder(path: str | Path, cache_dir: Optional[str | Path] = None, name: str = "") -> Dataset:
    """Decode an image-folder dataset once and cache it as uint8 tensors in the user cache directory."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist: point data_dir at a folder (or .tar/.tar.gz) "
                        "holding train/<class>/* and test/<class>/*")
    key = _content_key(root)
    cache = _cache_path(root, Path(cache_dir) if cache_dir else None)
    data = None
    if cache.is_file():
        try:
            data = torch.load(cache, weights_only=True)
            if data.get("key") != key:
                data = None
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt, never trusted
            data = None
    if data is None:
        data = _decode_image_folder(root)
        data["key"] = key
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # parallel runs never write the same temporary file
            torch.save(data, tmp)
            tmp.replace(cache)
        except OSError as err:
            raise DataError(f"cannot write the decoded-image cache {cache} ({err}): set data.cache_dir or "
                            "LIGHTNING_NAS_CACHE to a writable folder") from err
        size = sum(t.numel() * t.element_size() for k, t in data.items() if k.endswith(("_x", "_y")))
        print(f"lightning_nas: decoded {root} once into {cache} ({size / 2**20:.0f} MB; data.cache_dir or "
              "LIGHTNING_NAS_CACHE moves it)", file=sys.stderr, flush=True)
    train = ImageData(data["train_x"], data["train_y"])
    mean, std = channel_stats(train.images)
    return Dataset(name or root.name.split(".")[0], train, ImageData(data["test_x"], data["test_y"]),
                   list(data["classes"]), mean, std)


# ---- scikit-learn digits ----------------------------------------------------------------------------
def load_digits(test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images), scaled to uint8; a fixed stratified test split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(images, bunch.target, test_size=test_fraction, random_state=0,
                                              stratify=bunch.target)
    train = ImageData(torch.from_numpy(x_tr), torch.from_numpy(y_tr))
    mean, std = channel_stats(train.images)
    return Dataset("digits", train, ImageData(torch.from_numpy(x_te), torch.from_numpy(y_te)),
                   [str(i) for i in range(10)], mean, std)


def load_dataset(name: str, data_dir: Optional[str] = None, download: bool = False,
                 cache_dir: Optional[str] = None) -> Dataset:
    """Dispatch on ``name``: cifar10, cifar100, digits or image_folder."""
    if name == "digits":
        return load_digits()
    if name in ("cifar10", "cifar100"):
        if data_dir is None:
            raise DataError(f"dataset {name} needs data_dir: the folder that holds (or will hold) the official files")
        return load_cifar(data_dir, 10 if name == "cifar10" else 100, download)
    if name == "image_folder":
        if data_dir is None:
            raise DataError("dataset image_folder needs data_dir: a folder or .tar.gz with train/<class>/* and "
                            "test/<class>/*")
        return load_image_folder(data_dir, cache_dir)
    raise DataError(f"unknown dataset {name!r}; use cifar10, cifar100, image_folder or digits")
