"""``python -m lightning_nas {fit,validate,test} --config <yaml>`` (LightningCLI, subclass mode) and
``python -m lightning_nas describe ...``.

Every fit/validate/test writes a run directory ``<run.root>/<run.name>/<version>/`` with config.yaml,
metrics.csv, checkpoints/ (last.ckpt and the best by ``run.monitor``), genotypes.jsonl, genotype.json and
summary.json; the command's last printed line is that directory. ``seed_everything`` (default 2, the
DARTS seed) drives the data split, alpha init, data order and augmentation.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import yaml
from lightning_fabric.plugins import CheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from lightning_nas.callbacks.finite_check import FiniteCheck
from lightning_nas.callbacks.progress import EpochLines
from lightning_nas.callbacks.run_artifacts import RunArtifacts, format_summary
from lightning_nas.checkpointing import AtomicCheckpointIO, GracefulStop
from lightning_nas.data.datamodules import InMemoryDataModule
from lightning_nas.errors import ConfigError, LightningNASError
from lightning_nas.methods.common import NASModule
from lightning_nas.reproducibility import git_revision, library_versions

RUN_DIR_ENV = "LIGHTNING_NAS_RUN_DIR"


def _version_name(root: Path, name: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    version, k = stamp, 1
    while (root / name / version).exists():
        k += 1
        version = f"{stamp}-{k}"
    return version


class NASCLI(LightningCLI):
    def __init__(self, **kwargs: Any):
        self.run_dir: Optional[Path] = None
        self.git = git_revision()
        kwargs.setdefault("parser_kwargs", {"prog": "python -m lightning_nas", "description": (
            "lightning_nas: reproducible weight-sharing NAS. Run a method from a config with "
            "`fit --config experiments/<...>.yaml`; `describe --genotype G` prints a genotype's size, cost and "
            "cell shape (see `python -m lightning_nas describe --help`); `ws-variance RUN_DIR...` compares the "
            "weight-sharing rankings of runs.")})
        super().__init__(
            model_class=NASModule, subclass_mode_model=True,
            datamodule_class=InMemoryDataModule, subclass_mode_data=True,
            seed_everything_default=2, auto_configure_optimizers=False,
            # Lightning's layer table (with "0 Total Flops" for a search) is noise here: summary.json has the facts
            trainer_defaults={"enable_model_summary": False},
            save_config_kwargs={"overwrite": True},
            **kwargs,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate and test (``predict`` has nothing to predict for a search and is not offered)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run.root", type=str, default="ckpt", help="where run directories are created")
        parser.add_argument("--run.name", type=Optional[str], default=None,
                            help="run directory name (default: <method>_<dataset>)")
        parser.add_argument("--run.version", type=Optional[str], default=None,
                            help="run sub-directory (default: a timestamp; set it for multi-node runs)")
        parser.add_argument("--run.monitor", type=Optional[str], default="val/acc",
                            help="metric that picks the best checkpoint (null: keep only last.ckpt)")
        parser.add_argument("--run.checkpoint_every_minutes", type=Optional[float], default=10.0,
                            help="also rewrite checkpoints/last.ckpt during an epoch every this many minutes "
                                 "(null: only at epoch ends); resuming from it continues exactly")
        parser.add_argument("--run.checkpoint_every_n_steps", type=Optional[int], default=None,
                            help="also rewrite checkpoints/last.ckpt every this many search steps")
        parser.add_argument("--run.finite_check_every", type=int, default=20,
                            help="stop with a clear error when weights or alphas become NaN/Inf, checked every N "
                                 "training steps and before every validation and checkpoint")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")

    # ---- run directory --------------------------------------------------------------------------------
    def _section(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        cfg = self._section()
        seed = cfg.get("seed_everything")
        data_args = cfg.get("data", {}).get("init_args")
        if isinstance(seed, int) and not isinstance(seed, bool):
            for section in ("data", "model"):  # one seed drives everything, sampling on every rank included
                init_args = cfg.get(section, {}).get("init_args")
                if init_args is not None and "seed" in init_args:
                    init_args["seed"] = seed
        if os.environ.get(RUN_DIR_ENV):  # a DDP child process: reuse the directory the launcher made
            self.run_dir = Path(os.environ[RUN_DIR_ENV])
            return
        run = cfg.get("run")
        root = Path(run.root)
        name = run.name or (f"{cfg.model.class_path.rsplit('.', 1)[-1].lower()}_"
                            f"{(data_args.get('dataset') if data_args else None) or 'data'}")
        version = run.version or os.environ.get("TORCHELASTIC_RUN_ID") or _version_name(root, name)
        if self.subcommand != "fit":
            version = f"{version}-{self.subcommand}"
        self.run_dir = root / name / version
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_DIR_ENV] = str(self.run_dir.resolve())

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """Every run logs to <run_dir>/metrics.csv (first logger, so ``trainer.log_dir`` is the run directory)
        next to the loggers of the config, and writes last.ckpt, the best checkpoint and the run artifacts."""
        cfg = self._section()
        assert self.run_dir is not None
        trainer_init = self.config_init[self.subcommand]["trainer"]
        user_loggers = trainer_init.get("logger")
        if user_loggers in (None, True, False):
            user_loggers = []
        elif not isinstance(user_loggers, list):
            user_loggers = [user_loggers]
        trainer_init["logger"] = [CSVLogger(save_dir=str(self.run_dir), name="", version="")] + user_loggers
        trainer_init["default_root_dir"] = str(self.run_dir)
        max_steps = trainer_init.get("max_steps")
        if self.subcommand == "fit" and isinstance(max_steps, int) and max_steps > 0:
            # trainer.max_steps counts search steps; Lightning stops on its global step, which counts optimizer steps
            trainer_init["max_steps"] = max_steps * getattr(self.model, "optimizer_steps_per_search_step", 1)
        ckpt_dir = str(self.run_dir / "checkpoints")
        callbacks: list[pl.Callback] = []
        first: list[pl.Callback] = []  # before the config's callbacks: nothing reads diverged values
        if self.subcommand == "fit":  # validate / test only read a checkpoint
            first.append(FiniteCheck(cfg.run.finite_check_every, ckpt_dir))
            # last.ckpt is rewritten after every epoch on its own: Lightning 2.6's save_last only refreshes it when
            # a top-k checkpoint is saved in the same step, which leaves it stale once the metric stops improving
            callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                                             enable_version_counter=False))
            callbacks += self._mid_epoch_checkpoints(cfg.run, ckpt_dir)
            first.append(GracefulStop(ckpt_dir, f"python -m lightning_nas fit --config {self.run_dir / 'config.yaml'} "
                                                "--ckpt_path {ckpt}"))
            plugins = trainer_init.get("plugins") or []
            plugins = plugins if isinstance(plugins, list) else [plugins]
            if not any(isinstance(p, CheckpointIO) for p in plugins):  # a kill during a write keeps the old file
                trainer_init["plugins"] = plugins + [AtomicCheckpointIO()]
            monitor = cfg.run.monitor
            if monitor:
                callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, monitor=monitor, mode="min" if "loss" in monitor
                                                 else "max", filename="best-epoch{epoch:03d}",
                                                 auto_insert_metric_name=False))
            callbacks.append(EpochLines())
        seed = cfg.get("seed_everything")
        ckpt_path = cfg.get("ckpt_path")
        callbacks.append(RunArtifacts(self.run_dir, self.subcommand, seed if isinstance(seed, int) else None,
                                      self.git, str(ckpt_path) if ckpt_path else None))
        user_callbacks = trainer_init.get("callbacks") or []
        if not isinstance(user_callbacks, list):
            user_callbacks = [user_callbacks]
        trainer_init["callbacks"] = first + user_callbacks + callbacks
        return super().instantiate_trainer(**kwargs)

    def _mid_epoch_checkpoints(self, run: Any, ckpt_dir: str) -> list[pl.Callback]:
        """last.ckpt also every ``run.checkpoint_every_minutes`` / ``run.checkpoint_every_n_steps`` search steps."""
        minutes, steps = run.checkpoint_every_minutes, run.checkpoint_every_n_steps
        if minutes is not None and minutes <= 0 or steps is not None and steps < 1:
            raise ConfigError(f"run.checkpoint_every_minutes must be > 0 and run.checkpoint_every_n_steps >= 1 (or "
                              f"null to turn them off), got {minutes} and {steps}")
        last = dict(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
        out: list[pl.Callback] = []
        if minutes:
            out.append(ModelCheckpoint(train_time_interval=timedelta(minutes=minutes), **last))
        if steps:  # Lightning counts optimizer steps
            per = getattr(self.model, "optimizer_steps_per_search_step", 1)
            out.append(ModelCheckpoint(every_n_train_steps=steps * per, **last))
        return out

    def after_instantiate_classes(self) -> None:
        config_text = self._config_text()
        if isinstance(self.model, NASModule):
            self.model.run_metadata = {
                "config": config_text,
                "seed": self._section().get("seed_everything"),
                "versions": library_versions(),
                "git": self.git,
            }
        # the resolved config as hyperparameters of every logger (wandb's run config: runs group by any field)
        hparams = flatten_config(yaml.safe_load(config_text) or {})
        hparams["run.dir"] = str(self.run_dir)
        for logger in self.trainer.loggers:
            logger.log_hyperparams(hparams)

    def _config_text(self) -> str:
        parser = self._parser(self.subcommand)
        return parser.dump(self._section(), skip_check=True)

    def _print_run_dir(self) -> None:
        """A short summary of the run, then its directory as the last line (after wandb's own closing output)."""
        if not self.trainer.is_global_zero:
            return
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
                logger.experiment.finish()
        assert self.run_dir is not None
        summary = self.run_dir / "summary.json"
        if summary.is_file():
            print(format_summary(json.loads(summary.read_text())), flush=True)
        print(self.run_dir, flush=True)

    after_fit = after_validate = after_test = _print_run_dir


USAGE = """usage: python -m lightning_nas {fit,validate,test,describe,ws-variance} ...

lightning_nas: reproducible weight-sharing neural architecture search.

subcommands:
  fit          run a method from a config: fit --config experiments/<...>.yaml
  validate     evaluate a run's checkpoint on the held-out split (--config <run>/config.yaml --ckpt_path
               <run>/checkpoints/last.ckpt); a discrete search reports its incumbent's benchmark accuracies
  test         the same on the test set
  describe     parameters, cost and cell shape of a genotype or a NAS-Bench-201 cell
  ws-variance  weight-sharing variance across runs: S-Tau between seeds, GT-Tau, TnR

`python -m lightning_nas <subcommand> --help` lists a subcommand's options."""


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"init_args": {"order": 1}}} -> {"model.init_args.order": 1} (lists kept as values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, name + "."))
        else:
            out[name] = value
    return out


class _DropTips(logging.Filter):
    """Lightning's advertisements ("Tip: ... litlogger / litmodels") are not run output, and the normal end of a
    fit ("`max_epochs=N` reached") is what the summary says (other reasons to stop, such as max_time, stay)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return "Tip:" not in msg and not ("stopped:" in msg and "`max_epochs=" in msg)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv[0] == "describe":
        from lightning_nas.describe import main as describe_main

        return describe_main(argv[1:])
    if argv and argv[0] == "ws-variance":
        from lightning_nas.analysis.ws_variance import main as ws_variance_main

        return ws_variance_main(argv[1:])
    # in-memory batches need no workers; the stream's length is exact (it shards by rank itself)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)`? is deprecated.*")
    # discrete searches (NASWOT, REA, ...) have nothing to optimise
    warnings.filterwarnings("ignore", message=".*configure_optimizers` returned `None`.*")
    warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
    # a resumed run writes its own run directory: the old checkpoint's directory is not reloaded, by design
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
    # validate / test read a checkpoint and write none, so the fit's checkpoint callbacks are deliberately absent
    warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint need to be provided.*")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        if not any(isinstance(f, _DropTips) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(_DropTips())
    previous = os.environ.get(RUN_DIR_ENV)
    try:
        NASCLI(args=argv if argv != sys.argv[1:] else None)
    except LightningNASError as err:
        print(f"{err.prefix}: {err}", file=sys.stderr)
        return err.exit_code
    finally:  # the variable only hands the run directory to DDP children of this call
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous
    return 0
