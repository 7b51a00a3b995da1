"""Writes a run's artifacts (rank 0 only): genotypes.jsonl after every epoch, genotype.json and summary.json
at the end of fit/validate/test."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_nas.callbacks.schedule import EPOCH_NUMBERING, epoch_number
from lightning_nas.core.capabilities import TrainsArchitecture
from lightning_nas.core.module import NASModule
from lightning_nas.data.datamodules import InMemoryDataModule
from lightning_nas.reproducibility import library_versions


def _jsonable(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        value = float(v.item() if isinstance(v, torch.Tensor) else v)
        out[k] = value if math.isfinite(value) else None  # type: ignore[assignment]
    return out


class RunArtifacts(Callback):
    def __init__(self, run_dir: str | Path, subcommand: str = "fit", seed: Optional[int] = None,
                 git: Optional[str] = None, resumed_from: Optional[str] = None):
        self.run_dir = Path(run_dir)
        self.subcommand, self.seed, self.git, self.resumed_from = subcommand, seed, git, resumed_from
        self._start = time.time()
        self._earlier_s = 0.0  # wall time of the segments before a resume, up to the checkpoint resumed from
        self.best_val: Optional[dict[str, float]] = None  # the best val/acc of the fit and its epoch
        self._last_epoch: Optional[int] = None  # the number of the last epoch that ended in this process

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None and not trainer.sanity_checking:
            value = float(acc)
            if math.isfinite(value) and (self.best_val is None or value > self.best_val["value"]):
                self.best_val = {"value": value, "epoch": epoch_number(trainer)}
        if self.subcommand == "validate":
            self._finish(trainer, pl_module)

    def wall_time_s(self) -> float:
        """The run's wall time so far, over every segment (a resumed run adds its segment to the time the
        checkpoint it resumed from had taken), so that s/step divides the whole run's time by its steps."""
        return self._earlier_s + time.time() - self._start

    def state_dict(self) -> dict[str, Any]:
        return {"best_val": self.best_val, "wall_time_s": self.wall_time_s()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_val = state_dict.get("best_val")
        self._earlier_s = float(state_dict.get("wall_time_s") or 0.0)

    def _genotype_record(self, pl_module: pl.LightningModule, epoch: Optional[int]) -> Optional[dict[str, Any]]:
        if not isinstance(pl_module, NASModule):
            return None
        g = pl_module.genotype()
        if g is None:
            return None
        record: dict[str, Any] = {"epoch": epoch, "genotype": g.to_dict(), "text": g.to_text()}
        if isinstance(pl_module, TrainsArchitecture):
            record["primitives"] = list(pl_module.supernet.primitives)
            record["alpha_softmax"] = {k: [[round(x, 6) for x in row] for row in w.detach().cpu().tolist()]
                                       for k, w in pl_module.architecture_weights().items()}
        return record

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._last_epoch = epoch_number(trainer)
        record = self._genotype_record(pl_module, self._last_epoch)
        if record is not None:
            with open(self.run_dir / "genotypes.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        # the last epoch that ended (after a fit that ran none, e.g. a resume after the last epoch, the epochs run)
        epoch = (self._last_epoch or trainer.current_epoch) if self.subcommand == "fit" else None
        record = self._genotype_record(pl_module, epoch)
        if record is not None:
            (self.run_dir / "genotype.json").write_text(json.dumps(record, indent=2) + "\n")
        dm = trainer.datamodule
        ours = isinstance(pl_module, NASModule)
        summary = {
            "subcommand": self.subcommand,
            "method": pl_module.method_id() if ours else type(pl_module).__name__,
            "space": pl_module.space_id() if ours else None,
            "data": dm.describe() if isinstance(dm, InMemoryDataModule) else None,
            "seed": self.seed,
            "epochs": trainer.current_epoch,
            "epoch_numbering": EPOCH_NUMBERING,
            "global_step": trainer.global_step,  # optimizer steps (Lightning's count)
            "search_steps": pl_module.search_steps if ours else trainer.global_step,
            "metrics": _jsonable({k: v for k, v in trainer.callback_metrics.items() if not k.startswith("alpha_")}),
            "best_val_acc": self.best_val,
            "genotype": record["text"] if record else None,
            "wall_time_s": round(self.wall_time_s(), 3),  # every segment of a resumed run
            "segment_wall_time_s": round(time.time() - self._start, 3),  # this process's
            "versions": library_versions(),
            "git_revision": self.git,
            "resumed_from": self.resumed_from,
        }
        if ours:
            if pl_module.num_parameters is not None:
                summary["num_parameters"] = pl_module.num_parameters
            summary["variant"] = pl_module.variant()
            summary.update(pl_module.summary_extras())
        path = self.run_dir / "summary.json"
        if self.resumed_from and path.is_file():  # a run continued in its directory keeps the earlier summary
            k = 1
            while (self.run_dir / f"summary.before-resume-{k}.json").exists():
                k += 1
            path.rename(self.run_dir / f"summary.before-resume-{k}.json")
        path.write_text(json.dumps(summary, indent=2) + "\n")
        self._wandb_figures(trainer)

    def _wandb_figures(self, trainer: pl.Trainer) -> None:
        """With a WandbLogger: the report's figures of this run (cells, alpha heatmap, curves) as PNGs in
        ``<run>/figures/`` and as images of the W&B run."""
        from pytorch_lightning.loggers import WandbLogger

        if self.subcommand != "fit" or not any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
            return
        from lightning_nas.callbacks.probes import log_image
        from lightning_nas.reporting.figures import write_run_figures

        for name, png in write_run_figures(self.run_dir).items():
            log_image(trainer, f"figures/{name}", png)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.subcommand == "test":
            self._finish(trainer, pl_module)


def format_summary(summary: dict[str, Any]) -> str:
    """The few lines a run ends with: what ran, for how long, what it found and how good it is."""
    method = str(summary.get("method", "")).rsplit(".", 1)[-1]
    data = (summary.get("data") or {}).get("dataset")
    space = str(summary.get("space")).split("(")[0]
    steps = summary.get("search_steps", summary.get("global_step"))
    lines = [f"{method} on {space} | data {data} | seed {summary.get('seed')} | "
             f"{summary.get('subcommand')}: {summary.get('epochs')} epochs, {steps} steps, "
             f"{summary.get('wall_time_s', 0.0):.0f} s"]
    metrics = summary.get("metrics") or {}
    facts = []
    best = summary.get("best_val_acc")
    if best:
        epoch = best["epoch"] + (0 if summary.get("epoch_numbering") == EPOCH_NUMBERING else 1)  # older: from 0
        facts.append(f"best val/acc {best['value']:.4f} (epoch {epoch})")
    for key in ("val/acc", "test/acc", "benchmark/cifar10_test", "test/cifar10_test", "val/cifar10_test"):
        if metrics.get(key) is not None:
            facts.append(f"{key} {metrics[key]:.4g}")
    if summary.get("num_parameters"):
        facts.append(f"{summary['num_parameters']:,} parameters")
    if facts:
        lines.append(" | ".join(facts))
    if summary.get("genotype"):
        lines.append(f"genotype: {summary['genotype']}")
    return "\n".join(lines)
