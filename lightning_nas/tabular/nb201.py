"""NAS-Bench-201 lookups (Dong & Yang, ICLR 2020; NATS-Bench topology space, Dong et al., TPAMI 2021).

The default table ships with the package (``data/nb201_test_accuracy.csv.gz``, see ``data/README.md`` for its
source and attribution): the 200-epoch test accuracy averaged over seeds of all 15,625 architectures on
CIFAR-10, CIFAR-100 and ImageNet16-120, in the benchmark's index order. ``load_benchmark(path)`` also reads
the official files, which add validation accuracies (columns ``<dataset>_valid``):
- NATS-Bench ``NATS-tss-v1_0-3ffb9-simple/`` (a directory: meta.pickle.pbz2 + one file per architecture),
- NATS-Bench ``NATS-tss-v1_0-3ffb9-full.pickle.pbz2`` / ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` (one file),
- NAS-Bench-201 ``NAS-Bench-201-v1_0-e61699.pth`` / ``NAS-Bench-201-v1_1-096897.pth``,
- a CSV (optionally gzipped) with the shipped table's columns.
Only plain containers are rebuilt from the official files (no nats_bench install needed): the pickles through
``safe_pickle``, the ``.pth`` with ``torch.load(weights_only=True)``, so a file that names anything else (code to run)
is refused with one line, not executed.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import pickle
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from lightning_nas import safe_pickle
from lightning_nas.errors import ConfigError, DataError, GenotypeError
from lightning_nas.search_spaces.nb201.arch import NB201Arch

DATASETS = ("cifar10", "cifar100", "imagenet16_120")
METRICS = ("test", "valid")
DOWNLOAD_HINT = (
    "download NATS-tss-v1_0-3ffb9-simple.tar (or NAS-Bench-201-v1_1-096897.pth) from the links in "
    "https://github.com/D-X-Y/NATS-Bench, unpack it and pass the directory or file as benchmark_path; leave "
    "benchmark_path unset to use the 200-epoch test accuracies shipped with lightning_nas")
# (column) -> (the official files' dataset key, eval-set name)
OFFICIAL_KEYS = {
    "cifar10_test": ("cifar10", "ori-test"),
    "cifar100_test": ("cifar100", "x-test"),
    "imagenet16_120_test": ("ImageNet16-120", "x-test"),
    "cifar10_valid": ("cifar10-valid", "x-valid"),
    "cifar100_valid": ("cifar100", "x-valid"),
    "imagenet16_120_valid": ("ImageNet16-120", "x-valid"),
}
ArchLike = Union[NB201Arch, str, int]


def canonical_dataset(name: str) -> str:
    """Our name of a benchmark dataset from any usual spelling: the benchmark's own (``ImageNet16-120``,
    ``cifar10``), lower case, with hyphens or underscores (``imagenet16-120``, ``cifar-10``)."""
    key = name.strip().lower().replace("-", "_")
    key = {"cifar_10": "cifar10", "cifar_100": "cifar100"}.get(key, key)
    if key not in DATASETS:
        raise ConfigError(f"unknown benchmark dataset {name!r}; use one of {list(DATASETS)} (or the benchmark's "
                          "spelling, e.g. ImageNet16-120)")
    return key


class NB201Benchmark:
    """Architecture index <-> arch string and the trained accuracies of every architecture."""

    def __init__(self, archs: list[str], columns: dict[str, np.ndarray], source: str):
        if len(set(archs)) != len(archs):
            raise DataError(f"{source}: the benchmark lists an architecture twice")
        self.archs = archs
        self.columns = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
        self.source = source
        self._index = {a: i for i, a in enumerate(archs)}

    def __len__(self) -> int:
        return len(self.archs)

    def arch(self, index: int) -> NB201Arch:
        if not 0 <= int(index) < len(self):
            raise GenotypeError(f"architecture index {index} is out of range [0, {len(self) - 1}]")
        return NB201Arch.from_string(self.archs[int(index)])

    def index(self, arch: ArchLike) -> int:
        if isinstance(arch, int):
            self.arch(arch)
            return arch
        text = arch.to_string() if isinstance(arch, NB201Arch) else NB201Arch.from_string(arch).to_string()
        if text not in self._index:
            raise GenotypeError(f"{text} is not in the benchmark ({self.source})")
        return self._index[text]

    def column(self, dataset: str, metric: str = "test") -> np.ndarray:
        """Accuracies of every architecture, in index order."""
        dataset = canonical_dataset(dataset)
        if metric not in METRICS:
            raise ConfigError(f"unknown benchmark metric {metric!r}; use one of {list(METRICS)}")
        key = f"{dataset}_{metric}"
        if key not in self.columns:
            raise ConfigError(f"{self.source} has no {metric} accuracies for {dataset} (it has "
                              f"{sorted(self.columns)}); validation accuracies need the official files: "
                              f"{DOWNLOAD_HINT.split(';')[0]}")
        return self.columns[key]

    def accuracy(self, arch: ArchLike, dataset: str = "cifar10", metric: str = "test") -> float:
        return float(self.column(dataset, metric)[self.index(arch)])

    def query(self, arch: ArchLike) -> dict[str, Any]:
        """Everything the table has on one architecture."""
        i = self.index(arch)
        return {"index": i, "arch": self.archs[i], **{k: float(v[i]) for k, v in sorted(self.columns.items())}}

    def to_csv(self, path: Union[str, Path]) -> None:
        """Write the table (gzipped when the name ends in .gz), e.g. to cache an export of the official files."""
        keys = sorted(self.columns)
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "wt", newline="") as f:  # type: ignore[operator]
            w = csv.writer(f)
            w.writerow(["index", "arch", *keys])
            for i, a in enumerate(self.archs):
                w.writerow([i, a, *(f"{self.columns[k][i]:.4f}" for k in keys)])


# ---- readers ---------------------------------------------------------------------------------------------
def _read_csv(text: str, source: str) -> NB201Benchmark:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "arch" not in rows[0] or "index" not in rows[0]:
        raise DataError(f"{source} is not a NAS-Bench-201 table (need columns index, arch, <dataset>_test)")
    keys = [k for k in rows[0] if k not in ("index", "arch")]
    try:
        rows.sort(key=lambda r: int(r["index"]))
        if [int(r["index"]) for r in rows] != list(range(len(rows))):
            raise DataError(f"{source}: the index column must run 0..{len(rows) - 1}")
        columns = {k: np.array([float(r[k]) for r in rows]) for k in keys}
    except (TypeError, ValueError) as err:
        raise DataError(f"{source} has a malformed row ({err}); re-export or re-download it") from err
    return NB201Benchmark([r["arch"] for r in rows], columns, source)


def _mean_final(arch_results: dict, dataset: str, setname: str) -> float:
    """Mean over the benchmark's seeds of the last epoch's accuracy (the API's ``is_random=False``)."""
    seeds = arch_results["dataset_seed"].get(dataset) or []
    values = []
    for seed in seeds:
        trial = arch_results["all_results"][(dataset, seed)]
        values.append(float(trial["eval_acc1es"][f"{setname}@{int(trial['epochs']) - 1}"]))
    return float(np.mean(values)) if values else float("nan")


def _from_official(meta_archs: list[str], infos: dict[int, dict], hp: str, source: str) -> NB201Benchmark:
    columns = {k: np.full(len(meta_archs), np.nan) for k in OFFICIAL_KEYS}
    for index, by_hp in infos.items():
        if hp not in by_hp:
            raise DataError(f"{source}: architecture {index} has no {hp!r} results (has {sorted(by_hp)})")
        for key, (dataset, setname) in OFFICIAL_KEYS.items():
            try:
                columns[key][int(index)] = _mean_final(by_hp[hp], dataset, setname)
            except KeyError:
                pass  # this file has no such set: the column stays NaN and is dropped below
    columns = {k: v for k, v in columns.items() if not np.isnan(v).all()}
    return NB201Benchmark(list(meta_archs), columns, source)


def _pickle_bz2(path: Path) -> Any:
    with bz2.open(path, "rb") as f:
        return safe_pickle.load(f)  # plain containers only: no code from the file runs


def _read_nats_dir(root: Path) -> NB201Benchmark:
    meta = _pickle_bz2(root / "meta.pickle.pbz2")
    infos = {}
    for i in range(len(meta["meta_archs"])):
        path = root / f"{i:06d}.pickle.pbz2"
        if not path.is_file():
            raise DataError(f"{root} is incomplete: {path.name} is missing; {DOWNLOAD_HINT}")
        infos[i] = _pickle_bz2(path)
    return _from_official(meta["meta_archs"], infos, "200", str(root))


def _read_official_file(path: Path) -> NB201Benchmark:
    if path.suffix == ".pth":
        import torch

        data = torch.load(path, map_location="cpu", weights_only=True)  # plain containers: no code runs
        hp = "full"
    else:
        data = _pickle_bz2(path)
        hp = "200"
    missing = {"meta_archs", "arch2infos"} - set(data)
    if missing:
        raise DataError(f"{path} is not a NAS-Bench-201 / NATS-Bench topology file (missing {sorted(missing)})")
    return _from_official(data["meta_archs"], data["arch2infos"], hp, str(path))


@lru_cache(maxsize=4)
def _load(path: Optional[str]) -> NB201Benchmark:
    if path is None:
        blob = resources.files("lightning_nas.tabular").joinpath("data/nb201_test_accuracy.csv.gz").read_bytes()
        return _read_csv(gzip.decompress(blob).decode(), "lightning_nas's NAS-Bench-201 table (NATS-Bench export)")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"NAS-Bench-201 benchmark file {p} not found: {DOWNLOAD_HINT}")
    try:
        if p.is_dir():
            if not (p / "meta.pickle.pbz2").is_file():
                raise DataError(f"{p} is not a NATS-Bench topology directory (no meta.pickle.pbz2): {DOWNLOAD_HINT}")
            return _read_nats_dir(p)
        if p.name.endswith((".csv", ".csv.gz")):
            raw = p.read_bytes()
            return _read_csv((gzip.decompress(raw) if p.name.endswith(".gz") else raw).decode(), str(p))
        return _read_official_file(p)
    except pickle.UnpicklingError as err:
        if isinstance(err, safe_pickle.UnsafePickleError) or "Weights only load failed" in str(err):
            first = str(err).strip().splitlines()[0]
            raise DataError(f"the NAS-Bench-201 benchmark {p} holds more than plain containers ({first[:200]}): it "
                            f"is not the official file and was not read; {DOWNLOAD_HINT}") from err
        raise DataError(f"cannot read the NAS-Bench-201 benchmark {p} ({type(err).__name__}: {err}); the file "
                        f"may be truncated or of another format: {DOWNLOAD_HINT}") from err
    except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"cannot read the NAS-Bench-201 benchmark {p} ({type(err).__name__}: {err}); the file "
                        f"may be truncated or of another format: {DOWNLOAD_HINT}") from err


def load_benchmark(path: Optional[Union[str, Path]] = None) -> NB201Benchmark:
    """The shipped table (``path=None``) or an official benchmark file; cached per process."""
    return _load(None if path is None else str(path))


def default_benchmark() -> NB201Benchmark:
    return load_benchmark(None)
