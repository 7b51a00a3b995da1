"""Seconds per DARTS search step (architecture step + weight step) through the real Lightning loop.

    python benchmarks/search_step.py --data ../shared/data/cifar10-jpg.tar.gz --orders 1 2 --steps 3

Runs every requested order in one process on the same data and reports the median step time of each
(the first step is warm-up and excluded) and the ratio to the first order listed; ``--plain`` adds the first order's
ratio to a plain PyTorch loop taking the same step (``gpu_step.time_plain``). Defaults are the
paper's supernet (C=16, 8 cells, batch 64, 32x32).
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import partial

import pytorch_lightning as pl
import torch

from lightning_nas.callbacks import StepTime
from lightning_nas.data.datamodules import SearchDataModule
from lightning_nas.methods import DARTS
from lightning_nas.search_spaces.darts import DartsSupernet


def time_order(order: int, args: argparse.Namespace) -> dict:
    pl.seed_everything(2, verbose=False)
    dataset = "image_folder" if args.data else "digits"
    dm = SearchDataModule(dataset=dataset, data_dir=args.data, batch_size=args.batch, seed=2,
                          image_size=args.image_size)
    model = DARTS(supernet=partial(DartsSupernet, channels=args.channels, layers=args.layers),
                  num_classes=dm.num_classes, in_channels=dm.in_channels, order=order)
    timer = StepTime()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=args.steps + 1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator=args.accelerator, devices=1, callbacks=[timer])
    trainer.fit(model, datamodule=dm)
    steady = timer.times[1:]
    out = {"order": order, "median_s": statistics.median(steady), "steps_s": [round(t, 3) for t in steady]}
    if torch.cuda.is_available() and args.accelerator != "cpu":
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="image folder / archive (default: digits, resized by --image-size)")
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per order (after one warm-up step)")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--plain", action="store_true",
                        help="also time a plain PyTorch loop of the first-order step (ratio_to_plain)")
    args = parser.parse_args()
    results = [time_order(order, args) for order in args.orders]
    base = results[0]["median_s"]
    for r in results:
        r["ratio_to_first"] = round(r["median_s"] / base, 3)
    if args.plain:  # the same first-order step as a plain PyTorch loop, same supernet and batch size
        from gpu_step import time_plain

        ref = argparse.Namespace(batch=args.batch, image_size=args.image_size, warmup=1, steps=args.steps,
                                 accelerator=args.accelerator, darts_channels=args.channels, darts_layers=args.layers)
        plain = time_plain("darts", ref)
        for r in results:
            if r["order"] == 1:
                r["ratio_to_plain"] = round(r["median_s"] / plain, 3)
    print(json.dumps({"config": vars(args), "threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
