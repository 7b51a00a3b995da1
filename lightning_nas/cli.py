"""``python -m lightning_nas {fit,validate,test} --config <yaml>`` (LightningCLI, subclass mode) and
``python -m lightning_nas describe ...``.

Every fit/validate/test writes a run directory ``<run.root>/<run.name>/<version>/`` with config.yaml,
metrics.csv, checkpoints/ (last.ckpt and the best by ``run.monitor``), genotypes.jsonl, genotype.json and
summary.json; the command's last printed line is that directory. ``seed_everything`` (default 2, the
DARTS seed) drives the data split, alpha init, data order and augmentation.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import importlib
import json
import logging
import netrc
import os
import shutil
import sys
import time
import warnings
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, Optional
from urllib.parse import urlparse

import pytorch_lightning as pl
import torch
import yaml
from lightning_fabric.plugins import CheckpointIO
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from lightning_nas.callbacks.finite_check import FiniteCheck
from lightning_nas.callbacks.progress import EpochLines
from lightning_nas.callbacks.run_artifacts import RunArtifacts, format_summary
from lightning_nas.checkpointing import (
    AtomicCheckpointIO,
    BestCheckpoint,
    GracefulStop,
    MidEpochCheckpoint,
    ResumeState,
)
from lightning_nas.core.module import NASModule
from lightning_nas.data.datamodules import InMemoryDataModule
from lightning_nas.errors import CheckpointError, ConfigError, LightningNASError, LostProcess, NothingToDo, OutputError
from lightning_nas.reproducibility import git_revision, library_versions
from lightning_nas.run_lock import RunLock

RUN_DIR_ENV = "LIGHTNING_NAS_RUN_DIR"
#: run directories this process created: a command that fails before writing anything removes its own
CREATED_RUN_DIRS: list[Path] = []
ACTIVE_TRAINER: Optional[pl.Trainer] = None  # the fit's trainer, for the error message of a lost DDP process
HELD_LOCKS: list[RunLock] = []  # released when the command ends, however it ends
_NOTHING_WRITTEN = {"config.yaml", "hparams.yaml", "wandb"}  # wandb: a W&B run that never started


def _version_name(root: Path, name: str, claim: bool = False) -> str:
    """A timestamp version not taken yet; ``claim``: its directory is created here (atomically, so two runs started
    in the same second get two directories)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    version, k = stamp, 1
    while True:
        path = root / name / version
        if claim:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.mkdir()
                CREATED_RUN_DIRS.append(path)
                return version
            except FileExistsError:
                pass
            except OSError as err:
                raise ConfigError(f"cannot create the run directory {path} ({err.strerror}): set --run.root to a "
                                  "writable folder") from None
        elif not path.exists():
            return version
        k += 1
        version = f"{stamp}-{k}"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run appends to it instead."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):  # continue its columns (new ones widen the header)
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class AppendingCSVLogger(CSVLogger):
    """``<run dir>/metrics.csv``, appended to when a run continues in its directory; its ``epoch`` column numbers
    epochs from 1, as every output does (Lightning logs ``current_epoch``, from 0)."""

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        super().log_metrics(metrics, step)

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


_JSONARGPARSE_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:",
                       "- Expected a <class 'NoneType'>", "Given value type:")


def _drop_namespaces(text: str) -> str:
    """Remove ``Namespace(...)`` dumps (balanced parentheses) and the "Got value:" that introduces them."""
    while (start := text.find("Namespace(")) >= 0:
        depth, end = 0, start + len("Namespace")
        for end in range(start + len("Namespace"), len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        head = text[:start].removesuffix("Got value: ").rstrip(". ")
        text = head + text[end + 1:]
    return text


def condense_parser_error(message: str) -> str:
    """jsonargparse's error without the Union bookkeeping and config dumps: the key and the reasons, one line."""
    kept = []
    for line in (raw.strip() for raw in message.splitlines()):
        dump = line.startswith("Given value:") and ("Namespace(" in line or "NestedArg(" in line or len(line) > 120)
        if line and not dump and not line.startswith(_JSONARGPARSE_NOISE):
            kept.append(line.lstrip("- "))
    text = _drop_namespaces(" ".join(kept)).replace("Does not validate against any of the Union subtypes ", "")
    if text.startswith("Unexpected config"):
        text = "a --config file is empty or not a mapping of options"
    if text.startswith("Problems parsing config"):
        text = "a --config file is not valid YAML (" + text.removeprefix("Problems parsing config").lstrip(": ") + ")"
    return text


class NASArgumentParser(LightningArgumentParser):
    """Bad options and values end with one line (the key and the reason) and exit code 2, not a usage dump."""

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        sys.stderr.write(f"error: {condense_parser_error(message)} (`python -m lightning_nas fit --help` lists "
                         "the options)\n")
        self.exit(2)


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
            parser_class=NASArgumentParser,
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

    def _parse_ckpt_path(self) -> None:
        """Lightning reads a --ckpt_path at parse time: refuse a missing or broken file before it does."""
        if self.config.get("subcommand"):
            _check_checkpoint_file(self.config[self.config.subcommand].get("ckpt_path"))
        super()._parse_ckpt_path()

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
        trainer_args = cfg.get("trainer") or {}
        if self.subcommand in ("fit", "validate", "test") and "WandbLogger" in str(trainer_args.get("logger")):
            _check_wandb()  # before any directory is created
        for key in ("max_epochs", "max_steps"):
            if self.subcommand == "fit" and trainer_args.get(key) == 0:
                raise ConfigError(f"trainer.{key} 0 trains nothing: the run would report the initial, untrained "
                                  f"architecture; set trainer.{key} >= 1 (-1 for no limit)")
        if os.environ.get(RUN_DIR_ENV):  # a DDP child process: reuse the directory the launcher made
            self.run_dir = Path(os.environ[RUN_DIR_ENV])
            return
        run = cfg.get("run")
        root = Path(run.root)
        name = run.name or (f"{cfg.model.class_path.rsplit('.', 1)[-1].lower()}_"
                            f"{(data_args.get('dataset') if data_args else None) or 'data'}")
        resumed = self._resumed_run_dir(cfg.get("ckpt_path"))
        if resumed is not None:  # continue the interrupted run where it lives: its logs are appended to
            changed = _resume_changes(resumed / "config.yaml", self._config_text())
            _refuse_finished(Path(str(cfg.get("ckpt_path"))), resumed, trainer_args.get("max_epochs"))
            k = 1
            while (resumed / f"config.resume-{k}.yaml").exists():
                k += 1
            # the run's config.yaml stays as it was written; this segment's config goes beside it
            self.save_config_kwargs["config_filename"] = f"config.resume-{k}.yaml"
            if changed:
                print(f"lightning_nas: resuming with {', '.join(changed)} (allowed: they do not change what is "
                      f"trained; recorded in config.resume-{k}.yaml)", file=sys.stderr)
            self.run_dir = resumed
            print(f"lightning_nas: resuming into {resumed} (metrics.csv and genotypes.jsonl are appended to, an "
                  "earlier summary.json is kept as summary.before-resume-N.json)", file=sys.stderr)
        else:
            version = (run.version or os.environ.get("TORCHELASTIC_RUN_ID")
                       or _version_name(root, name, claim=self.subcommand == "fit"))
            if self.subcommand != "fit":
                base, k = f"{version}-{self.subcommand}", 1
                version = base
                while (root / name / version).exists():  # a second validate / test of the same run
                    k += 1
                    version = f"{base}{k}"
            self.run_dir = root / name / version
        first_process = int(os.environ.get("NODE_RANK", "0")) == 0 and int(os.environ.get("RANK", "0")) == 0
        owner = self.subcommand == "fit" and first_process
        if owner and resumed is None and (self.run_dir / "config.yaml").exists():
            raise self._holds_a_run()
        if not self.run_dir.exists():
            CREATED_RUN_DIRS.append(self.run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create the run directory {self.run_dir} ({err.strerror}): set --run.root to a "
                              "writable folder") from None
        if owner:  # one writer per run: a second process with the same run.version, or a resume, waits its turn
            lock = RunLock(self.run_dir)
            lock.acquire()
            HELD_LOCKS.append(lock)
            if resumed is None and (self.run_dir / "config.yaml").exists():  # started and finished meanwhile
                raise self._holds_a_run()
        os.environ[RUN_DIR_ENV] = str(self.run_dir.resolve())

    def _holds_a_run(self) -> ConfigError:
        return ConfigError(
            f"the run directory {self.run_dir} already holds a run (run.version {self.run_dir.name!r}); a new run "
            "never overwrites it: choose another run.version (or leave it unset for a timestamp), or continue that "
            f"run with --ckpt_path {self.run_dir / 'checkpoints' / 'last.ckpt'}")

    def _resumed_run_dir(self, ckpt_path: Any) -> Optional[Path]:
        """The run directory a ``fit --ckpt_path`` continues: the checkpoint's own run when it is
        ``<run>/checkpoints/*.ckpt`` of a lightning_nas run (it has ``config.yaml``), else None (a new run)."""
        if self.subcommand != "fit" or not ckpt_path:  # Lightning's keywords were refused at parse time
            return None
        path = Path(str(ckpt_path))
        run_dir = path.parent.parent
        if path.parent.name == "checkpoints" and (run_dir / "config.yaml").is_file():
            return run_dir
        return None

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
        trainer_init["logger"] = [AppendingCSVLogger(save_dir=str(self.run_dir), name="", version="")] + user_loggers
        trainer_init["default_root_dir"] = str(self.run_dir)
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            # the config parser turns every number into a float, and Lightning reads 1.0 as "100 %": an explicit 1
            # means one batch here, like every other whole number (leave the option unset for all batches)
            if trainer_init.get(key) == 1:
                trainer_init[key] = 1
        if self.subcommand == "fit" and trainer_init.get("limit_train_batches") in (0, 0.0):
            raise ConfigError("trainer.limit_train_batches 0 trains nothing: the genotype would come from the "
                              "initial weights; set a positive number of batches or a fraction in (0, 1]")
        max_steps = trainer_init.get("max_steps")
        if self.subcommand == "fit" and isinstance(max_steps, int) and max_steps > 0:
            # trainer.max_steps counts search steps; Lightning stops on its global step, which counts optimizer steps
            trainer_init["max_steps"] = max_steps * self._optimizer_steps_per_search_step()
        ckpt_dir = str(self.run_dir / "checkpoints")
        callbacks: list[pl.Callback] = []
        first: list[pl.Callback] = []  # before the config's callbacks: nothing reads diverged values
        if self.subcommand == "fit":  # validate / test only read a checkpoint
            first.append(FiniteCheck(cfg.run.finite_check_every, ckpt_dir))
            first.append(ResumeState())  # before any callback that writes a checkpoint after a batch
            monitor = cfg.run.monitor
            if monitor:  # before last.ckpt's: the epoch's last.ckpt holds the best score that epoch set
                callbacks.append(BestCheckpoint(dirpath=ckpt_dir, monitor=monitor, mode="min" if "loss" in monitor
                                                else "max", filename="best-epoch{epoch:03d}",
                                                auto_insert_metric_name=False))
            # last.ckpt is rewritten after every epoch on its own: Lightning 2.6's save_last only refreshes it when
            # a top-k checkpoint is saved in the same step, which leaves it stale once the metric stops improving
            callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                                             enable_version_counter=False))
            callbacks += self._mid_epoch_checkpoints(cfg.run, ckpt_dir)
            # after the config's callbacks: they see the step the run stops at
            resume = _resume_command(self.run_dir, "{ckpt}")  # a template: the writers fill in the checkpoint
            callbacks.append(GracefulStop(ckpt_dir, resume))
            plugins = trainer_init.get("plugins") or []
            plugins = plugins if isinstance(plugins, list) else [plugins]
            if not any(isinstance(p, CheckpointIO) for p in plugins):  # a kill during a write keeps the old file
                trainer_init["plugins"] = plugins + [AtomicCheckpointIO(resume)]
            callbacks.append(EpochLines())
        seed = cfg.get("seed_everything")
        ckpt_path = cfg.get("ckpt_path")
        callbacks.append(RunArtifacts(self.run_dir, self.subcommand, seed if isinstance(seed, int) else None,
                                      self.git, str(ckpt_path) if ckpt_path else None))
        user_callbacks = trainer_init.get("callbacks") or []
        if not isinstance(user_callbacks, list):
            user_callbacks = [user_callbacks]
        trainer_init["callbacks"] = first + user_callbacks + callbacks
        global ACTIVE_TRAINER
        ACTIVE_TRAINER = super().instantiate_trainer(**kwargs)
        return ACTIVE_TRAINER

    def _mid_epoch_checkpoints(self, run: Any, ckpt_dir: str) -> list[pl.Callback]:
        """last.ckpt also every ``run.checkpoint_every_minutes`` / ``run.checkpoint_every_n_steps`` search steps."""
        minutes, steps = run.checkpoint_every_minutes, run.checkpoint_every_n_steps
        if minutes is not None and minutes <= 0 or steps is not None and steps < 1:
            raise ConfigError(f"run.checkpoint_every_minutes must be > 0 and run.checkpoint_every_n_steps >= 1 (or "
                              f"null to turn them off), got {minutes} and {steps}")
        last = dict(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
        out: list[pl.Callback] = []
        if minutes:
            out.append(MidEpochCheckpoint(train_time_interval=timedelta(minutes=minutes), **last))
        if steps:  # Lightning counts optimizer steps
            per = self._optimizer_steps_per_search_step()
            out.append(MidEpochCheckpoint(every_n_train_steps=steps * per, **last))
        return out

    def _optimizer_steps_per_search_step(self) -> int:
        """Lightning's optimizer steps per search step of the method (1 for a LightningModule not of ours)."""
        return self.model.optimizer_steps_per_search_step if isinstance(self.model, NASModule) else 1

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


USAGE = """usage: python -m lightning_nas {fit,validate,test,describe,report,protocol,ws-variance} ...

lightning_nas: reproducible weight-sharing neural architecture search.

subcommands:
  fit          run a method from a config: fit --config experiments/<...>.yaml
  validate     evaluate a run's checkpoint on the held-out split (--config <run>/config.yaml --ckpt_path
               <run>/checkpoints/last.ckpt); a discrete search reports its incumbent's benchmark accuracies
  test         the same on the test set
  describe     parameters, cost and cell shape of a genotype or a NAS-Bench-201 cell
  report       compare run directories: an offline HTML page and a Markdown summary (report RUN_DIR...)
  protocol     a paper's protocol as one command: searches, selection, final retrainings, report (resumable)
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
    """Lightning's advertisements ("Tip: ... litlogger / litmodels") are not run output; the normal end of a fit
    ("`max_epochs=N` reached") and the seed are what the summary says (other reasons to stop, such as max_time,
    stay); the accelerator inventory ("GPU available: False, used: False", "TPU available") says nothing about the
    run (Lightning's warning about a GPU left unused stays)."""

    NOISE = ("Tip:", "Seed set to", "GPU available:", "TPU available:", "HPU available:")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith(self.NOISE) or "Tip:" in msg:
            return False
        return not ("stopped:" in msg and "`max_epochs=" in msg)


#: what a resume may not change: the run's identity and what it trains on (the rest, such as devices, callbacks,
#: loggers, validation limits or the data's location, may change and is recorded)
_FIXED_ON_RESUME = ("seed_everything", "model.", "data.", "trainer.max_epochs", "trainer.max_steps",
                    "trainer.min_epochs", "trainer.min_steps", "trainer.limit_train_batches",
                    "trainer.accumulate_grad_batches", "trainer.precision", "trainer.gradient_clip_val",
                    "trainer.gradient_clip_algorithm")
_FREE_ON_RESUME = ("data.init_args.data_dir", "data.init_args.cache_dir", "data.init_args.download",
                   "data.init_args.resident", "data.init_args.eval_batch_size", "model.init_args.compile")


def _method_id(class_path: Any) -> str:
    """A config's model class as ``NASModule.method_id`` names it (``lightning_nas.methods.DARTS`` is an alias)."""
    module, _, name = str(class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return str(class_path)
    return f"{cls.__module__}.{cls.__qualname__}"


def _resume_changes(original: Path, config_text: str) -> list[str]:
    """Compares a resume's resolved config with the run's config.yaml: refuses a change of what the run trains
    (seed, model, data, epochs, ...: the checkpoint's optimizer state, split and schedule belong to the original
    values), naming each with both values and the fix; returns the allowed changes as "key (old -> new)"."""
    try:
        before = flatten_config(yaml.safe_load(original.read_text()) or {})
    except (OSError, yaml.YAMLError):
        return []  # nothing to compare with: the checkpoint's own checks apply
    after = flatten_config(yaml.safe_load(config_text) or {})
    old_method, new_method = (_method_id(c.get("model.class_path")) for c in (before, after))
    if old_method != new_method:
        raise CheckpointError(f"the checkpoint was written by method {old_method}, but this run is {new_method}: "
                              f"resume it with the config it was written with (--config {original})")
    refused, allowed = [], []
    for key in sorted(set(before) | set(after)):
        if key == "ckpt_path" or key.startswith("run.") or before.get(key) == after.get(key):
            continue
        change = f"{key} ({before.get(key)!r} -> {after.get(key)!r})"
        fixed = key.startswith(_FIXED_ON_RESUME) and not key.startswith(_FREE_ON_RESUME)
        (refused if fixed else allowed).append(change)
    if refused:
        raise ConfigError(
            f"a resume cannot change {', '.join(refused)}: the checkpoint's weights, optimizer state, data split and "
            f"schedule belong to the run's values. Resume with its config (--config {original}), or start a new run "
            "for other settings")
    return allowed


def _refuse_finished(ckpt: Path, run_dir: Path, max_epochs: Any) -> None:
    """A resume of a run that already trained its ``max_epochs`` (a requeued job, the resume command run twice):
    nothing to train, and a fit would rewrite summary.json without metrics. Said in one line, exit code 0."""
    if not isinstance(max_epochs, int) or max_epochs < 1:
        return
    try:
        loops = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("loops") or {}
        done = int(loops["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError, RuntimeError, OSError):
        return  # not a checkpoint of ours: the checks that follow say so
    if done >= max_epochs:
        raise NothingToDo(f"the run in {run_dir} already finished its {max_epochs} epochs ({ckpt.name}): nothing to "
                          "resume; its results stay in summary.json")


def _check_checkpoint_file(ckpt_path: Any) -> None:
    """Refuse, before anything is built or written, a --ckpt_path that is missing or not a whole checkpoint, and
    Lightning's keywords: every run has a directory of its own, so ``last`` (or ``best``, ``hpc``, ``registry``)
    would look in the new run's empty one and silently start a fresh run."""
    if not ckpt_path:
        return
    hint = "pass checkpoints/last.ckpt (or a best-*.ckpt) of a lightning_nas run directory"
    if str(ckpt_path) in ("last", "best", "hpc", "registry"):
        raise CheckpointError(f"--ckpt_path {ckpt_path} would start a fresh run (each run writes a directory of its "
                              f"own, where Lightning finds no '{ckpt_path}' checkpoint): {hint}, as the resume command "
                              "a run prints")
    path = Path(str(ckpt_path))
    if not path.is_file():
        raise CheckpointError(f"--ckpt_path {path} does not exist: {hint}")
    try:
        with zipfile.ZipFile(path) as archive:
            whole = any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        whole = False
    if not whole:
        raise CheckpointError(f"--ckpt_path {path} is not a checkpoint, or it is truncated or corrupt (not a complete "
                              f"PyTorch archive): {hint}")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu", mmap=True)  # tensors are not read
    except Exception as err:  # a corrupt member, or objects that are not plain tensors and containers
        raise CheckpointError(f"--ckpt_path {path} cannot be read as a checkpoint ({type(err).__name__}): {hint}") \
            from None
    if not isinstance(ckpt, dict) or "lightning_nas" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"--ckpt_path {path} is a PyTorch file but not a lightning_nas checkpoint: {hint}")


def _our_error(exc: BaseException) -> Optional[LightningNASError]:
    """The LightningNASError that caused ``exc`` (itself, or one in its chain of causes), or Lightning's
    configuration error as one, if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, LightningNASError):
            return exc
        if isinstance(exc, MisconfigurationException):  # Lightning's own clear messages (devices, accelerator, ...)
            return ConfigError(f"{exc} (a trainer setting; `python -m lightning_nas fit --help` lists them)")
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:  # a log or artifact write: the disk, not the run
            return OutputError(_disk_message(exc))
        if type(exc).__module__.startswith("wandb") and isinstance(exc, Exception):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return OutputError(f"W&B could not start the run ({first[:300]}): check the network and your login, or "
                               "run offline with WANDB_MODE=offline (`wandb sync` uploads it later)")
        if _peer_lost(exc):
            return LostProcess(_lost_process_message())
        if isinstance(exc, RuntimeError) and str(exc).startswith("Error(s) in loading state_dict"):
            lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
            return CheckpointError(f"the checkpoint holds another network ({lines[0][:200] if lines else exc}; "
                                   f"{max(len(lines) - 1, 0)} more differences): it was written with other model "
                                   "settings; resume it with the config it was written with (config.yaml in its run "
                                   "directory)")
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


#: what gloo / NCCL / the c10d store say when a peer process of the group has gone
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "remote process exited",
              "NCCL communicator was aborted", "failed to recv", "Connection refused")


def _multi_process() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) > 1


def _peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says that another process of this multi-process run is gone (a network error of the process
    group, or gloo's / NCCL's words for it)."""
    import torch.distributed as dist

    if not isinstance(exc, RuntimeError) or not _multi_process():
        return False
    return isinstance(exc, getattr(dist, "DistNetworkError", ())) or any(s in str(exc) for s in _PEER_GONE)


def _lost_process_message() -> str:
    """Which process of the DDP run ended (rank 0 launched the others and sees how they ended), and how to resume."""
    import signal

    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else os.environ.get("RANK", "?")
    lost = "another process of this run (rank 0 names it)"
    launcher = getattr(getattr(ACTIVE_TRAINER, "strategy", None), "launcher", None)
    for k, proc in enumerate(getattr(launcher, "procs", None) or [], start=1):
        with contextlib.suppress(Exception):
            code = proc.wait(timeout=10)
            how = (f"killed by {signal.Signals(-code).name}" + (" (what the out-of-memory killer sends)"
                                                                 if code == -signal.SIGKILL else "")
                   if code < 0 else f"exit code {code}")
            lost = f"rank {k} (pid {proc.pid}, {how})"
            break
    resume = _resume_this_run()
    return (f"rank {rank} stopped: {lost} of this multi-process run ended; "
            + (f"resume with: {resume[1]}" if resume else "no checkpoint was written yet: start it again"))


#: how long W&B may take to start a run before the fit gives up with a message (WANDB_INIT_TIMEOUT overrides it)
WANDB_INIT_TIMEOUT_S = 30


def _check_wandb() -> None:
    """A W&B logger online needs a login: checked before anything is created. A server that does not answer is
    given ``WANDB_INIT_TIMEOUT`` seconds (default 30, W&B's own is 90), then the fit stops with one line."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return
    if not _wandb_key_stored():
        raise ConfigError("trainer.logger is a WandbLogger, and W&B online needs a login: run `wandb login` (or set "
                          "WANDB_API_KEY), or run offline with WANDB_MODE=offline (`wandb sync` uploads it later)")
    os.environ.setdefault("WANDB_INIT_TIMEOUT", str(WANDB_INIT_TIMEOUT_S))


def _wandb_key_stored() -> bool:
    """Whether W&B has an API key (``WANDB_API_KEY``, or the netrc entry ``wandb login`` writes for its host),
    checked without importing wandb, whose settings, once set up, would hold for the rest of the process."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


_DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EIO}


def _resume_command(run_dir: Path, ckpt: Any) -> str:
    """The command that continues the run in ``run_dir`` from ``ckpt``."""
    return f"python -m lightning_nas fit --config {run_dir / 'config.yaml'} --ckpt_path {ckpt}"


def _resume_this_run() -> Optional[tuple[Path, str]]:
    """The last.ckpt of the run this command writes and the command that resumes it (None: none written yet)."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    last = Path(run_dir) / "checkpoints" / "last.ckpt" if run_dir else None
    if last is None or not last.is_file():
        return None
    return last, _resume_command(Path(run_dir), last)


def _disk_message(err: OSError) -> str:
    resume = _resume_this_run()
    hint = (f"; the last good checkpoint, {resume[0]}, is intact: after freeing space (or making the folder "
            f"writable) resume with: {resume[1]}" if resume else "")
    return f"cannot write {err.filename or 'a file of the run'} ({err.strerror}){hint}"


def _release_locks() -> None:
    while HELD_LOCKS:
        HELD_LOCKS.pop().release()


def _remove_empty_run_dirs() -> None:
    """Remove the run directories this command created if it failed before writing anything but its config."""
    while CREATED_RUN_DIRS:
        run_dir = CREATED_RUN_DIRS.pop()
        if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= _NOTHING_WRITTEN:
            shutil.rmtree(run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):  # the run name's directory too, when it is empty
                run_dir.parent.rmdir()


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv[0] == "describe":
        from lightning_nas.describe import main as describe_main

        return describe_main(argv[1:])
    if argv and argv[0] == "protocol":
        from lightning_nas.protocol import main as protocol_main

        return protocol_main(argv[1:])
    if argv and argv[0] == "report":
        from lightning_nas.reporting.report import main as report_main

        return report_main(argv[1:])
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
    # a discrete search's step is one whole evaluation: the checkpoint after it is the state to resume from
    warnings.filterwarnings("ignore", message=".*Using ModelCheckpoint with manual optimization.*")
    # a resumed run writes its own run directory: the old checkpoint's directory is not reloaded, by design
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
    # every metric of a method is an epoch mean (on_epoch): the per-step logging interval hides none of them
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    # a run resumed in its own directory finds its checkpoints there (a new run's directory is always new)
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    # validate / test read a checkpoint and write none, so the fit's checkpoint callbacks are deliberately absent
    warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint need to be provided.*")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "lightning_fabric.utilities.seed"):
        if not any(isinstance(f, _DropTips) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(_DropTips())
    previous = os.environ.get(RUN_DIR_ENV)
    CREATED_RUN_DIRS.clear()
    try:
        NASCLI(args=argv if argv != sys.argv[1:] else None)
    except Exception as exc:
        _release_locks()
        err = _our_error(exc)  # jsonargparse wraps errors of the classes it builds in a dump of the config
        if err is None:
            raise
        _remove_empty_run_dirs()
        print(f"{err.prefix}: {err}", file=sys.stderr)
        return err.exit_code
    finally:  # the variable only hands the run directory to DDP children of this call
        global ACTIVE_TRAINER
        ACTIVE_TRAINER = None
        _release_locks()
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous
    return 0
