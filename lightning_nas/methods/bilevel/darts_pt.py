"""DARTS-PT: perturbation-based architecture selection (Wang et al., ICLR 2021, "Rethinking architecture selection
in differentiable NAS", Alg. 1-2; official ruocwang/darts-pt, ``nasbench201/projection.py:18-104``,
``sota/cnn/projection.py:62-238``, ``*/search_model_darts_proj.py``).

Selection after a trained supernet: the first ``search_epochs`` epochs are DARTS first order (0 with ``init_from``,
a checkpoint of any search on the same supernet, whose weights and alphas are loaded), then a tuning phase of
``proj_interval * (E + T - 1)`` epochs (+1 with T > 0), E the edges per cell and T the space's nodes that choose their
inputs (NB201: 6 and 0 -> 25 epochs; DARTS: 14 and 3 -> 81). Decisions come at tuning epochs that are multiples of
``proj_interval`` and at the last one, before that epoch trains:

- **operation** (the first E decisions; every cell type at once): a random undecided edge; for each of its ops, that
  op's weight is set to 0 in the projected weights (softmax(alpha), decided edges one-hot; no renormalising) and the
  supernet is scored on the held-out split with BN batch statistics; the op whose removal hurts most (lowest
  accuracy, ``proj_crit: acc``; or highest loss) is kept and the edge becomes one-hot. Ties: the lowest op index.
- **topology** (then, DARTS space): a random node with more than two inputs; repeatedly the input edge whose removal
  (its weights zeroed) scores best (highest accuracy, lowest loss) is dropped until two remain. Ties: the later
  edge (the official ``not compare``).

Cell types decide in turn (normal, then reduce, each seeing the other's decisions so far), as the official loop.

The search epochs follow DARTS's cosine over ``search_epochs`` (the official supernet run's own 100- or 50-epoch
schedule). Between decisions both the weights and alpha keep training on the projected weights (the DARTS first-order
step):
the weight optimizer restarts at ``tune_lr`` (official: 0.025 / 10, fresh momentum) with no schedule; alpha keeps its
optimizer. The genotype is derived from the projected weights.

Differences from the official code, by design: the random edge and node come from ``step_generator`` (same on every
rank and after a resume); the scoring forwards leave BN running statistics alone (the official ``infer(eval=False)``
updates them); ``proj_batches`` may score on fewer held-out batches than the whole split (default: all). With
``init_from`` the alpha optimizer starts fresh, as the official projection script's new architect does.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F

from lightning_nas.core.child_eval import frozen_bn_stats
from lightning_nas.core.host_reads import host_read
from lightning_nas.data.datamodules import SearchDataModule
from lightning_nas.errors import CheckpointError, ConfigError
from lightning_nas.methods.bilevel.darts import DARTS
from lightning_nas.search_spaces.space import uniform_index

DECISION_STREAM = 59


class DartsPT(DARTS):
    """DARTS (first order), then perturbation-based selection with tuning (defaults: the official settings)."""

    def __init__(self, *args: Any, init_from: Optional[str] = None, search_epochs: int = 0, proj_interval: int = 5,
                 proj_crit: Literal["acc", "loss"] = "acc", tune_lr: float = 0.0025,
                 proj_batches: Optional[int] = None, **kwargs: Any):
        """
        Args:
            init_from: ``last.ckpt`` of a search on the same supernet to select from (its weights and alphas).
            search_epochs: DARTS epochs before the selection (0 with ``init_from``).
            proj_interval: tuning epochs between decisions (official 5).
            proj_crit: ``acc`` (official default) or ``loss``.
            tune_lr: the weights' constant learning rate while tuning (official 0.0025).
            proj_batches: held-out batches each score uses (null: the whole held-out split, as official).
        """
        super().__init__(*args, **kwargs)
        if self.order != 1:
            raise ConfigError("DartsPT tunes with the first-order DARTS step (official): set model.order 1")
        if search_epochs < 0 or proj_interval < 1 or tune_lr <= 0 or (proj_batches is not None and proj_batches < 1):
            raise ConfigError(f"need model.search_epochs >= 0, proj_interval >= 1, tune_lr > 0 and proj_batches >= 1 "
                              f"(or null); got {search_epochs}, {proj_interval}, {tune_lr}, {proj_batches}")
        if proj_crit not in ("acc", "loss"):
            raise ConfigError(f"model.proj_crit must be 'acc' or 'loss', got {proj_crit!r}")
        self.init_from, self.search_epochs, self.proj_interval = init_from, search_epochs, proj_interval
        self.proj_crit, self.tune_lr, self.proj_batches = proj_crit, tune_lr, proj_batches
        cells = self.supernet.space.cell_types
        self.op_choice: dict[str, dict[int, int]] = {key: {} for key in cells}
        self.dropped: dict[str, list[int]] = {key: [] for key in cells}
        self.decisions: list[dict[str, Any]] = []
        self.tuning = False
        self._probe: Optional[list[tuple[torch.Tensor, torch.Tensor]]] = None

    # ---- the schedule -----------------------------------------------------------------------------------
    def num_edges(self) -> int:
        return next(iter(self.supernet.arch_logits().values())).shape[0]

    def tune_epochs(self) -> int:
        """Tuning epochs of the official schedule (module docstring)."""
        topology = len(self.supernet.space.input_choices())
        return self.proj_interval * (self.num_edges() + topology - 1) + (1 if topology else 0)

    def decision_kind(self, tune_epoch: int) -> Optional[str]:
        """``op``, ``edge`` or None at a tuning epoch (official: ``epoch % proj_intv == 0 or epoch == last``; the
        operations first, then the topology)."""
        if not (tune_epoch % self.proj_interval == 0 or tune_epoch == self.tune_epochs() - 1):
            return None
        if any(len(d) < self.num_edges() for d in self.op_choice.values()):
            return "op"
        topology_done = len({d["epoch"] for d in self.decisions if d["kind"] == "edge"})
        return "edge" if topology_done < len(self.supernet.space.input_choices()) else None

    def on_fit_start(self) -> None:
        super().on_fit_start()
        need = self.search_epochs + self.tune_epochs()
        if self.trainer.max_epochs != need:
            raise ConfigError(f"DartsPT runs search_epochs ({self.search_epochs}) + {self.tune_epochs()} tuning epochs "
                              f"(proj_interval {self.proj_interval} on this space): set trainer.max_epochs {need}")

    # ---- starting from another search ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.init_from is not None:
            self.load_supernet(self.init_from)

    def weight_schedule(self, opt: torch.optim.Optimizer, factory: Any, eta_min: float) -> Any:
        """DARTS's cosine over the ``search_epochs`` only (the official supernet run's own schedule); tuning runs at
        ``tune_lr``."""
        if factory is not None:
            return super().weight_schedule(opt, factory, eta_min)
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=float(max(self.search_epochs, 1)),
                                                          eta_min=eta_min)

    def load_supernet(self, path: str) -> None:
        """The supernet weights and alphas of another search's checkpoint (``weights_only``: no code runs)."""
        fix = "pass the <run dir>/checkpoints/last.ckpt of a search on the same supernet as model.init_from"
        file = FilePath(path)
        if not file.is_file():
            raise CheckpointError(f"model.init_from {path} does not exist: {fix}")
        try:
            ckpt = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, corrupt, not a PyTorch file, or objects weights_only refuses
            raise CheckpointError(f"model.init_from {path} cannot be read ({type(err).__name__}): {fix}") from None
        try:
            state = {k.removeprefix("supernet."): v for k, v in ckpt["state_dict"].items() if k.startswith("supernet.")}
            self.supernet.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"model.init_from {path} does not hold this supernet ({first}): {fix}") from None

    # ---- the projected weights ----------------------------------------------------------------------------------
    def projected_mixing(self) -> dict[str, torch.Tensor]:
        """softmax(alpha) with decided edges one-hot and dropped edges zero (differentiable in the others)."""
        out = {}
        for key, alpha in self.supernet.arch_logits().items():
            w = F.softmax(alpha, dim=-1)
            if self.op_choice[key] or self.dropped[key]:
                keep = torch.ones(w.shape[0], 1, dtype=w.dtype, device=w.device)
                fixed = torch.zeros_like(w)
                for e, op in self.op_choice[key].items():
                    keep[e], fixed[e, op] = 0, 1
                for e in self.dropped[key]:
                    keep[e], fixed[e] = 0, 0
                w = w * keep + fixed
            out[key] = w
        return out

    def weight_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, mixing={k: v.detach() for k, v in self.projected_mixing().items()})

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(self.supernet(x, mixing=self.projected_mixing()), y)

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, mixing=self.projected_mixing())

    def genotype(self) -> Any:
        return self.supernet.genotype(self.projected_mixing())

    # ---- decisions -------------------------------------------------------------------------------------------------
    def probe_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The held-out batches every score uses, on the device (built once)."""
        if self._probe is None:
            dm = self.trainer.datamodule
            if not isinstance(dm, SearchDataModule):
                raise ConfigError("DartsPT scores on the held-out split: use lightning_nas.data.datamodules."
                                  "SearchDataModule")
            self._probe = dm.device_batches(dm.fixed_val_batches(self.proj_batches), self.trainer)
        return self._probe

    @torch.no_grad()
    @host_read("DARTS-PT decides an op or an edge by comparing held-out scores on the host")
    def score(self, mixing: dict[str, torch.Tensor]) -> float:
        """Held-out accuracy or loss of the supernet with ``mixing`` (train-mode BN, running stats untouched)."""
        correct, loss, total = 0.0, 0.0, 0
        was_training = self.supernet.training
        self.supernet.train()
        with frozen_bn_stats(self.supernet):
            for x, y in self.probe_batches():
                logits = self.supernet(x, mixing=mixing)
                correct += float((logits.argmax(-1) == y).sum())
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
                total += len(y)
        self.supernet.train(was_training)
        return (correct if self.proj_crit == "acc" else loss) / max(total, 1)

    def _hurts_more(self, crit: float, best: float) -> bool:
        """The official ``compare``: a lower accuracy (a higher loss) than ``best``, strictly."""
        return crit < best if self.proj_crit == "acc" else crit > best

    def _score_without(self, key: str, index: tuple) -> float:
        """The score with ``index`` of cell type ``key``'s projected weights set to 0 (no renormalising)."""
        mixing = {k: v.detach() for k, v in self.projected_mixing().items()}
        mixing[key] = mixing[key].clone()
        mixing[key][index] = 0
        return self.score(mixing)

    def decide(self, kind: str, tune_epoch: int) -> None:
        """One decision per cell type (``op`` or ``edge``), recorded in ``decisions``."""
        g = self.step_generator(DECISION_STREAM)
        for key in self.supernet.space.cell_types:
            if kind == "op":
                undecided = [e for e in range(self.num_edges()) if e not in self.op_choice[key]]
                edge = undecided[uniform_index(len(undecided), g)]
                best_op, best = 0, None
                for op in range(len(self.supernet.primitives)):
                    crit = self._score_without(key, (edge, op))
                    if best is None or self._hurts_more(crit, best):  # strict: the lower op index on ties
                        best_op, best = op, crit
                self.op_choice[key][edge] = best_op
                self.decisions.append({"epoch": tune_epoch, "kind": "op", "cell": key, "edge": edge,
                                       "op": self.supernet.primitives[best_op]})
            else:
                open_nodes = [n for n in self.supernet.space.input_choices()
                              if not any(e in self.dropped[key] for e in n)]
                kept = list(open_nodes[uniform_index(len(open_nodes), g)])
                while len(kept) > self.supernet.space.inputs_kept:
                    drop, best = kept[0], None
                    for e in kept:
                        crit = self._score_without(key, (e,))
                        if best is None or not self._hurts_more(crit, best):  # official `not compare`: later wins
                            drop, best = e, crit
                    kept.remove(drop)
                    self.dropped[key].append(drop)
                    self.decisions.append({"epoch": tune_epoch, "kind": "edge", "cell": key, "dropped": drop})

    # ---- the loop ----------------------------------------------------------------------------------------------------
    def sync_lr_schedule(self) -> None:
        if self.current_epoch < self.search_epochs:  # tuning runs at a constant tune_lr
            super().sync_lr_schedule()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        tune_epoch = self.current_epoch - self.search_epochs
        if tune_epoch >= 0:
            if not self.tuning:  # the official reset_optimizer: a fresh SGD at tune_lr
                opt = self._weight_opt()
                opt.state.clear()
                for group in opt.param_groups:
                    group["lr"] = self.tune_lr
                self.tuning = True
            kind = self.decision_kind(tune_epoch)
            if kind is not None and not any(d["epoch"] == tune_epoch for d in self.decisions):
                self.decide(kind, tune_epoch)
        super().training_step(batch, batch_idx)

    # ---- state -------------------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightning_nas"]["darts_pt"] = {"decisions": list(self.decisions), "tuning": self.tuning}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint["lightning_nas"].get("darts_pt", {})
        self.tuning = bool(saved.get("tuning", False))
        self.decisions = list(saved.get("decisions", []))
        primitives = list(self.supernet.primitives)
        for key in self.op_choice:
            self.op_choice[key] = {d["edge"]: primitives.index(d["op"]) for d in self.decisions
                                   if d["kind"] == "op" and d["cell"] == key}
            self.dropped[key] = [d["dropped"] for d in self.decisions if d["kind"] == "edge" and d["cell"] == key]

    def summary_extras(self) -> dict[str, Any]:
        return {"darts_pt": {"init_from": self.init_from, "search_epochs": self.search_epochs,
                             "proj_interval": self.proj_interval, "proj_crit": self.proj_crit,
                             "decisions": list(self.decisions)}}
