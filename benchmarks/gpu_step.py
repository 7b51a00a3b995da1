"""Seconds per DARTS search step on the device, through the real Lightning loop: one JSON line per configuration.

    python benchmarks/gpu_step.py                      # on a GPU: NB201 and DARTS space, orders 1 and 2,
                                                       # eager vs compiled, fp32 vs bf16 (about 6 minutes on an H100)
    python benchmarks/gpu_step.py --smoke              # a few tiny steps on the CPU (the tests run it)

Each configuration runs ``--warmup`` steps (compilation, cuDNN autotuning, CUDA graph capture), then ``--steps``
timed steps with one device synchronisation at either end (a step never waits for the device inside, see
``callbacks/host_sync.py``, so the timed window is the steady-state throughput). The images are random uint8 CIFAR-
sized tensors resident on the device (``data.resident``), so no disk or host copy enters the time.

Fields: method, space, order, precision, compile (torch.compile mode, ``eager`` for none), batch, s_per_step,
warmup_s (the warm-up steps' wall time: with compile, mostly the compilation),
samples_per_s (training images per second: the weight batch; each step also draws a validation batch), peak_memory_gib
(CUDA), steps_per_epoch and the extrapolated time of ``--epochs`` epochs of the benchmark's protocol (s_per_step x
steps per epoch x epochs: CIFAR-10's 50,000 training images split half/half as in DARTS and NAS-Bench-201, batch 64:
391 steps per epoch; validation, logging and checkpoints not counted), and ``ratio_to_plain``: s/step over that of a
plain PyTorch loop (no Lightning) taking the same first-order step on the same supernet with the same batched
augmentation, timed in the same process (``--plain``, fp32 eager first-order configurations only).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from functools import partial
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback

from lightning_nas.data.datamodules import SearchDataModule
from lightning_nas.data.sources import Dataset, ImageData
from lightning_nas.methods import DARTS
from lightning_nas.search_spaces.darts import DartsSupernet
from lightning_nas.search_spaces.nb201 import NB201Supernet

CIFAR_TRAIN = 50_000


class RandomCIFAR(SearchDataModule):
    """CIFAR-shaped random uint8 images (``n`` training, 64 test), split half/half as DARTS's search."""

    def __init__(self, n: int, image_size: int, **kwargs: Any):
        super().__init__(dataset="digits", **kwargs)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n + 64, 3, image_size, image_size), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (n + 64,), generator=g)
        self._data = Dataset("random", ImageData(images[:n], labels[:n]), ImageData(images[n:], labels[n:]),
                             [str(c) for c in range(10)], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class WindowTimer(Callback):
    """Wall time of the steps after the first ``warmup``, synchronised once at each end of the window."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.seconds, self.steps = warmup, 0.0, 0.0, 0
        self.start, self.warmup_seconds = 0.0, 0.0

    @staticmethod
    def _sync(trainer: pl.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == 0:
            self.start = time.perf_counter()
        if batch_idx == self.warmup:
            self._sync(trainer)
            self.t0 = time.perf_counter()
            self.warmup_seconds = self.t0 - self.start

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(trainer)
        self.seconds = time.perf_counter() - self.t0
        self.steps = trainer.fit_loop.epoch_loop.batch_progress.current.completed - self.warmup


def supernet_factory(space: str, args: argparse.Namespace) -> partial:
    if space == "nb201":
        return partial(NB201Supernet, channels=args.nb201_channels, cells_per_stage=args.nb201_cells)
    return partial(DartsSupernet, channels=args.darts_channels, layers=args.darts_layers)


def time_lightning(space: str, order: int, precision: str, compile_mode: str, args: argparse.Namespace
                   ) -> tuple[float, float, Optional[float]]:
    """(s/step, seconds of the warm-up steps, peak GiB) of DARTS through the Lightning loop."""
    pl.seed_everything(2, verbose=False)
    n = (args.warmup + args.steps) * args.batch * 2  # one epoch holds exactly the warm-up and timed steps
    dm = RandomCIFAR(n, args.image_size, batch_size=args.batch, seed=2, resident="auto")
    compile_spec: Any = False if compile_mode == "eager" else {"mode": compile_mode}
    model = DARTS(supernet=supernet_factory(space, args), num_classes=10, in_channels=3, order=order,
                  compile=compile_spec)
    timer = WindowTimer(args.warmup)
    trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator=args.accelerator,
                         devices=1, precision=precision, callbacks=[timer])
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, datamodule=dm)
    peak = torch.cuda.max_memory_allocated() / 2**30 if trainer.strategy.root_device.type == "cuda" else None
    return timer.seconds / max(timer.steps, 1), timer.warmup_seconds, peak


def time_plain(space: str, args: argparse.Namespace) -> float:
    """s/step of the same first-order DARTS step written as a plain PyTorch loop (the reference)."""
    torch.manual_seed(2)
    device = torch.device("cuda" if args.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    net = supernet_factory(space, args)(10, 3).to(device)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    dm = RandomCIFAR(args.batch * 4, args.image_size)
    train = dm.data.train
    images, labels = train.images.to(device), train.labels.to(device)
    augment = dm.augment  # the same batched crop, flip and normalisation as the Lightning loop's
    g = torch.Generator().manual_seed(0)

    def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(images), (args.batch,), generator=g)
        return augment(images[idx], seed), labels[idx]

    def step() -> None:
        (x_t, y_t), (x_v, y_v) = batch(0), batch(1)
        a_opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x_v), y_v).backward(inputs=net.arch_parameters())
        a_opt.step()
        w_opt.zero_grad(set_to_none=True)
        mixing = {k: v.detach() for k, v in net.mixing_weights().items()}
        F.cross_entropy(net(x_t, mixing=mixing), y_t).backward()
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        w_opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", default=["nb201", "darts"], choices=["nb201", "darts"])
    parser.add_argument("--orders", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--compile", nargs="+", default=["eager", "default"],
                        help="eager and/or torch.compile modes (default, reduce-overhead, max-autotune)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of the extrapolated search time")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--nb201-channels", type=int, default=16)
    parser.add_argument("--nb201-cells", type=int, default=5, help="cells per stage (the benchmark's N = 5)")
    parser.add_argument("--darts-channels", type=int, default=16)
    parser.add_argument("--darts-layers", type=int, default=8)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--plain", action="store_true", help="also time the plain PyTorch reference loop")
    parser.add_argument("--smoke", action="store_true",
                        help="the CPU check the tests run: tiny supernets, 2 + 1 steps, eager, fp32, with --plain")
    args = parser.parse_args()
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # one JSON line per configuration, nothing else
    if args.smoke:
        args.accelerator, args.steps, args.warmup, args.batch, args.image_size = "cpu", 2, 1, 8, 16
        args.nb201_channels, args.nb201_cells, args.darts_channels, args.darts_layers = 4, 1, 4, 3
        args.compile, args.precisions, args.plain = ["eager"], ["32-true"], True
    steps_per_epoch = math.ceil(CIFAR_TRAIN // 2 / 64)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.accelerator != "cpu" else "cpu"
    for space in args.spaces:
        plain = time_plain(space, args) if args.plain else None
        for order in args.orders:
            for precision in args.precisions:
                for mode in args.compile:
                    s, warmup_s, peak = time_lightning(space, order, precision, mode, args)
                    line = {"method": "DARTS", "space": space, "order": order, "precision": precision,
                            "compile": mode, "batch": args.batch, "s_per_step": round(s, 5),
                            "warmup_s": round(warmup_s, 2),
                            "samples_per_s": round(args.batch / s, 1),
                            "peak_memory_gib": None if peak is None else round(peak, 3),
                            "steps_per_epoch": steps_per_epoch,
                            f"extrapolated_{args.epochs}_epochs_min": round(s * steps_per_epoch * args.epochs / 60,
                                                                             2),
                            "device": device, "threads": torch.get_num_threads()}
                    if plain is not None and order == 1 and precision == "32-true" and mode == "eager":
                        line["ratio_to_plain"] = round(s / plain, 3)
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
