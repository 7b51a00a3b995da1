"""SAEP: sub-architecture ensemble pruning (Bian et al., IEEE TNNLS 2021, arXiv 1910.00370; official code
eustomaqua/SAEP @ 729bab2, TensorFlow on AdaNet), on the DARTS space.

One training epoch is one AdaNet iteration (``trainer.max_epochs`` = T iterations; the batches of an epoch are the
iteration's training steps):

1. Candidates: for every genotype in ``genotypes``, a DARTS-space network of that cell at the depth of the
   previous best and at depth + 1 (AdaNet's simple generator; depth = cells, ``NetworkCIFAR`` without auxiliary
   head), initialised from (seed, iteration, candidate): the same on every rank and after a resume.
2. Each candidate trains on its own cross-entropy; beside it, its candidate ensemble F_c = sum_j w_j h_j + w_c h_c +
   b over the kept members (frozen, eval mode) trains only its mixture weights (scalars, AdaNet's SCALAR type,
   warm-started from the ensemble's, the new one at 1/N) on the ensemble objective CE(F_c) + sum_j (lambda r_j +
   beta) |w_j|, r_j = sqrt(depth_j) (AdaNet's complexity penalty; lambda = beta = 0 by default, as SAEP's code).
3. At the iteration's last step: the candidate whose ensemble objective is lowest on ``selection_batches`` fixed
   training batches joins the ensemble (its mixture weights become the ensemble's), then the members are pruned
   with ``pruning`` (``methods/ensembles/pruning.py``: none, prs, pap, pie) on ``pruning_batches`` fixed training
   batches, and the next iteration's candidates are built.

Pruned members (``prune_in_eval``): removed for good, from training and evaluation (default, the paper's intent:
a smaller ensemble); ``false`` is the official code's behaviour: a pruned member is masked (weight 0) in the next
iteration's training ensembles only, still counts at evaluation, and the mask is recomputed every iteration over
all members (a pruned member can come back).

Checkpoints hold the members, candidates, mixture weights, the optimizer's state (one optimizer whose parameter
group each iteration replaces) and the iteration's bookkeeping, so a run resumes exactly at any step.
DDP: DDP's reducer only sees an anchor parameter; the candidates' gradients are
averaged over ranks by one all-reduce per step (the candidates change every iteration, which DDP cannot follow),
and at each iteration's end their BN statistics are taken from rank 0 (DDP's buffer broadcast).
Defaults of the official code: 11 iterations, batch 64, RMSProp lr 0.003.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from lightning_nas.analysis.diversity import diversity_report
from lightning_nas.core.host_reads import host_read
from lightning_nas.core.module import NASModule, build_optimizer
from lightning_nas.errors import CheckpointError, ConfigError
from lightning_nas.methods.ensembles.pruning import CRITERIA, select_members
from lightning_nas.reproducibility import mix_seed, seeded
from lightning_nas.search_spaces.cost import count_parameters
from lightning_nas.search_spaces.darts.eval_network import NetworkCIFAR
from lightning_nas.search_spaces.darts.resolve import load_genotype

SAEP_RMSPROP = {"class_path": "torch.optim.RMSprop", "init_args": {"lr": 0.003}}
#: the generator stream (of seed, iteration, stream) of the pruning draws (PRS, PIE's first member); candidate k
#: of an iteration is initialised from stream 100 + k
PRUNE_STREAM = 7


@dataclass
class SubnetSpec:
    """A sub-architecture: its cell (DARTS text), depth in cells, and the iteration that built it."""

    genotype: str
    depth: int
    iteration: int
    candidate: int

    @property
    def complexity(self) -> float:
        """AdaNet's simple_dnn complexity r = sqrt(depth)."""
        return math.sqrt(self.depth)


class Candidate(nn.Module):
    """A candidate sub-architecture and the mixture weights and bias of its candidate ensemble (members..., itself)."""

    def __init__(self, net: nn.Module, mixture: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.net = net
        self.mixture = nn.Parameter(mixture.clone())
        self.bias = nn.Parameter(bias.clone())


class EnsembleDescription:
    """What ``genotype.json`` and the summary record for SAEP: the ensemble's members and mixture weights."""

    def __init__(self, members: list[SubnetSpec], weights: list[float], in_training: list[bool]):
        self.members, self.weights, self.in_training = members, weights, in_training

    def to_dict(self) -> dict[str, Any]:
        """Every member counts in evaluation (paper pruning deletes members; official pruning masks them in
        training only)."""
        return {"members": [{**asdict(m), "weight": w, "in_training": t, "in_evaluation": True}
                            for m, w, t in zip(self.members, self.weights, self.in_training)]}

    def to_text(self) -> str:
        parts = [f"depth {m.depth} (it. {m.iteration}) x {w:.3f}" for m, w in zip(self.members, self.weights)]
        return f"ensemble of {len(parts)}: " + ", ".join(parts) if parts else "empty ensemble"


class SAEP(NASModule):
    def __init__(self, genotypes: Optional[list[str]] = None, channels: int = 8, initial_depth: int = 1,
                 max_depth: int = 8, pruning: Literal["none", "prs", "pap", "pie"] = "pie",
                 pap_rule: Literal["paper", "official"] = "paper", pie_lambda: float = 0.5,
                 pie_rule: Literal["paper", "official"] = "paper",
                 prune_in_eval: bool = True, complexity_lambda: float = 0.0, complexity_beta: float = 0.0,
                 selection_batches: int = 2, pruning_batches: int = 2, grad_clip: float = 0.0,
                 optimizer: OptimizerCallable = SAEP_RMSPROP, num_classes: int = 10, in_channels: int = 3,
                 seed: int = 2):
        """
        Args:
            genotypes: the cells candidates are built from (published names, genotype.json, run directories or
                DARTS text); default ``[DARTS_V2]``.
            channels, initial_depth, max_depth: the candidates' initial channels and depth range (cells).
            pruning: ``none`` (AdaNet), ``prs``, ``pap`` or ``pie``.
            pap_rule: ``paper`` (keep a member whose removal raises the error) or ``official`` (the code's sign).
            pie_lambda: lambda of TDAC (0.5 in the official code).
            pie_rule: ``paper`` (VI 0 for two constant prediction vectors: nothing differs) or ``official`` (the
                code's 1, from its 0 / 1e-18; TDAC of two different constants is then lambda).
            prune_in_eval: remove pruned members from evaluation too (default) or mask them in training only.
            complexity_lambda, complexity_beta: AdaNet's complexity penalty (0 in SAEP's code).
            selection_batches, pruning_batches: fixed training batches (eval batch size) that select the
                candidate and that the criteria judge the members on.
            grad_clip: gradient-norm clipping of the candidates (0: off, as the official code).
            optimizer: for every iteration's candidates and mixture weights (official: RMSProp 0.003).
            seed: seeds candidate initialisation and PRS/PIE draws; the CLI sets it from seed_everything.
        """
        super().__init__()
        if pruning not in CRITERIA:
            raise ConfigError(f"model.pruning must be one of {list(CRITERIA)}, got {pruning!r}")
        if not 1 <= initial_depth <= max_depth or channels < 1:
            raise ConfigError(f"need 1 <= model.initial_depth <= model.max_depth and channels >= 1, got "
                              f"{initial_depth}, {max_depth}, {channels}")
        if selection_batches < 1 or pruning_batches < 1 or not 0 <= pie_lambda <= 1:
            raise ConfigError("model.selection_batches and pruning_batches must be >= 1 and pie_lambda in [0, 1]")
        self.automatic_optimization = False
        self.genotype_specs = list(genotypes or ["DARTS_V2"])
        self.cells = [load_genotype(g) for g in self.genotype_specs]
        self.channels, self.initial_depth, self.max_depth = channels, initial_depth, max_depth
        self.pruning, self.pap_rule, self.pie_lambda, self.prune_in_eval = pruning, pap_rule, pie_lambda, prune_in_eval
        self.pie_rule = pie_rule
        self.complexity_lambda, self.complexity_beta = complexity_lambda, complexity_beta
        self.selection_batches, self.pruning_batches, self.grad_clip = selection_batches, pruning_batches, grad_clip
        self.optimizer_spec, self.num_classes, self.in_channels, self.seed = optimizer, num_classes, in_channels, seed
        # the only parameter DDP's reducer sees (see the module docstring)
        self.ddp_anchor = nn.Parameter(torch.zeros(()))
        self.members = nn.ModuleList()
        self.member_specs: list[SubnetSpec] = []
        self.register_buffer("ensemble_weights", torch.zeros(0))
        self.register_buffer("ensemble_bias", torch.zeros(num_classes))
        self.in_training: list[bool] = []  # member mask of the candidates' ensembles (official pruning)
        self.candidates = nn.ModuleList()
        self.candidate_specs: list[SubnetSpec] = []
        self.iteration = 0
        self.step_in_iteration = 0
        self.best_depth = initial_depth
        self.history: list[dict[str, Any]] = []
        self.init_accuracy_metrics(num_classes)
        self._build_candidates()

    @property
    def _ddp_params_and_buffers_to_ignore(self) -> list[str]:  # read once, when DDP wraps the module
        names = [n for n, _ in self.named_parameters() if n != "ddp_anchor"]
        return names + [n for n, _ in self.named_buffers()]

    # ---- identity --------------------------------------------------------------------------------------
    def space_id(self) -> str:
        return f"NetworkCIFAR-ensemble(C={self.channels}; cells {'; '.join(c.to_text() for c in self.cells)})"

    def genotype(self) -> EnsembleDescription:
        return EnsembleDescription(self.member_specs, self.ensemble_weights.tolist(), self.in_training)

    @property
    def num_parameters(self) -> int:
        """Parameters of the evaluated ensemble (its members and mixture weights)."""
        return sum(count_parameters(m) for m in self.members) + len(self.members) + self.num_classes

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One optimizer whose parameter group is replaced by each iteration's candidates (fresh state, as a new
        AdaNet iteration), so Lightning counts its steps and checkpoints and restores its state."""
        return build_optimizer(self.optimizer_spec, self.candidates.parameters(), "model.optimizer")

    # ---- building ----------------------------------------------------------------------------------------
    def _subnet(self, spec: SubnetSpec) -> nn.Module:
        cell = load_genotype(spec.genotype)
        with seeded(mix_seed(self.seed, spec.iteration, 100 + spec.candidate)):
            return NetworkCIFAR(cell, channels=self.channels, num_classes=self.num_classes, layers=spec.depth,
                                auxiliary=False, in_channels=self.in_channels)

    def _candidate_bias(self) -> torch.Tensor:
        """AdaNet warm-starts the ensemble bias unless the previous ensemble lost members (then zeros)."""
        pruned_last = bool(self.history and self.history[-1]["pruned"])
        return torch.zeros(self.num_classes) if pruned_last else self.ensemble_bias.detach().cpu()

    def _candidate_mixture(self) -> torch.Tensor:
        """Warm start (AdaNet): the ensemble's weights for the members, 1/N for the newcomer. A member masked in
        training (official pruning) keeps its weight untouched (no gradient reaches it) and uses it again at
        evaluation, as in the official code."""
        return torch.tensor(self.ensemble_weights.tolist() + [1.0 / (sum(self.in_training) + 1)])

    def _build_candidates(self) -> None:
        depths = sorted({self.best_depth, min(self.best_depth + 1, self.max_depth)})
        self.candidate_specs = [SubnetSpec(cell.to_text(), d, self.iteration, k)
                                for k, (cell, d) in enumerate((c, d) for c in self.cells for d in depths)]
        device = self.ensemble_bias.device
        self.candidates = nn.ModuleList(
            Candidate(self._subnet(s), self._candidate_mixture(), self._candidate_bias()) for s in self.candidate_specs
        ).to(device)
        self.candidates.train()
        if self._trainer is not None and self.trainer.optimizers:
            opt = self.trainer.optimizers[0]
            opt.state.clear()
            opt.param_groups.clear()
            opt.add_param_group({"params": list(self.candidates.parameters())})

    # ---- the ensemble ------------------------------------------------------------------------------------
    def _member_logits(self, x: torch.Tensor, mask: list[bool]) -> list[Optional[torch.Tensor]]:
        out: list[Optional[torch.Tensor]] = []
        self.members.eval()  # frozen: running BN statistics, never updated (Lightning restores train modes per module)
        with torch.no_grad():
            for member, use in zip(self.members, mask):
                out.append(member(x)[0] if use else None)
        return out

    def _penalty(self, mixture: torch.Tensor, newcomer: SubnetSpec) -> torch.Tensor:
        """AdaNet's complexity penalty over the candidate ensemble's members in training and the newcomer."""
        if self.complexity_lambda == 0 and self.complexity_beta == 0:
            return mixture.new_zeros(())
        specs = [*self.member_specs, newcomer]
        used = torch.tensor([*self.in_training, True], device=mixture.device, dtype=mixture.dtype)
        r = torch.tensor([s.complexity for s in specs], device=mixture.device, dtype=mixture.dtype)
        return ((self.complexity_lambda * r + self.complexity_beta) * mixture.abs() * used).sum()

    def _candidate_ensemble(self, cand: Candidate, members: list[Optional[torch.Tensor]],
                            own: torch.Tensor) -> torch.Tensor:
        logits = cand.bias + cand.mixture[-1] * own
        for j, h in enumerate(members):
            if h is not None:
                logits = logits + cand.mixture[j] * h
        return logits

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.ensemble_bias.expand(len(x), -1)
        for h, w in zip(self._member_logits(x, [True] * len(self.members)), self.ensemble_weights):
            logits = logits + w * h
        return logits

    # ---- training ----------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        x, y = batch["train"]
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        members = self._member_logits(x, self.in_training)
        total = 0.0 * self.ddp_anchor
        objectives = []
        for cand, spec in zip(self.candidates, self.candidate_specs):
            own = cand.net(x)[0]
            ensemble = self._candidate_ensemble(cand, members, own.detach())
            objective = F.cross_entropy(ensemble, y) + self._penalty(cand.mixture, spec)
            total = total + F.cross_entropy(own, y) + objective
            objectives.append(objective.detach())
        self.manual_backward(total)
        self._average_candidate_grads()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.candidates.parameters()), self.grad_clip)
        opt.step()
        self.log("saep/candidate_objective", torch.stack(objectives).min(), on_step=False, on_epoch=True,
                 prog_bar=True)
        self.step_in_iteration += 1
        if self.step_in_iteration >= self.trainer.num_training_batches:
            with host_read("SAEP's iteration end selects a candidate and prunes the ensemble on the host"):
                self._finish_iteration()

    def _average_candidate_grads(self) -> None:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.candidates.parameters()]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for p, g in zip(self.candidates.parameters(), grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def _broadcast_candidate_buffers(self) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for b in self.candidates.buffers():
                dist.broadcast(b, src=0)

    # ---- the end of an iteration -------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """The fixed batches of selection, pruning (training images) and diversity (held-out images), on the
        device, built once: the same every iteration and on every rank."""
        dm = self.trainer.datamodule
        self._select_batches = dm.device_batches(dm.fixed_train_batches(self.selection_batches), self.trainer)
        self._prune_batches = dm.device_batches(dm.fixed_train_batches(self.pruning_batches), self.trainer)
        self._diversity_batches = dm.device_batches(dm.fixed_val_batches(self.pruning_batches), self.trainer)

    def _finish_iteration(self) -> None:
        self._broadcast_candidate_buffers()
        self.candidates.eval()
        losses = [0.0] * len(self.candidates)
        with torch.no_grad():
            for x, y in self._select_batches:
                members = self._member_logits(x, self.in_training)  # once per batch, for every candidate
                for k, cand in enumerate(self.candidates):
                    losses[k] += float(F.cross_entropy(self._candidate_ensemble(cand, members, cand.net(x)[0]), y))
        scores = [loss / len(self._select_batches) + float(self._penalty(cand.mixture, spec))
                  for loss, cand, spec in zip(losses, self.candidates, self.candidate_specs)]
        best = min(range(len(scores)), key=scores.__getitem__)
        chosen, spec = self.candidates[best], self.candidate_specs[best]
        for p in chosen.net.parameters():
            p.requires_grad_(False)
        self.members.append(chosen.net)
        self.member_specs.append(spec)
        self.ensemble_weights = chosen.mixture.detach().clone()
        self.ensemble_bias = chosen.bias.detach().clone()
        self.in_training.append(True)
        self.best_depth = spec.depth
        record = {"iteration": self.iteration, "selected": asdict(spec), "candidate_objectives": scores}
        record.update(self._prune())
        record["diversity"] = self._diversity()
        self.history.append(record)
        self.iteration += 1
        self.step_in_iteration = 0
        self._build_candidates()  # the next iteration's (never trained when this was the last)

    def _prune(self) -> dict[str, Any]:
        """Apply the criterion to all members: paper pruning deletes the pruned ones (they cost nothing
        afterwards), official pruning masks them in the next iteration's training ensembles."""
        batches = self._prune_batches
        y = torch.cat([b[1] for b in batches])
        self.members.eval()
        with torch.no_grad():
            logits = torch.stack([torch.cat([m(x)[0] for x, _ in batches]) for m in self.members])
        probs = self.ensemble_weights.view(-1, 1, 1) * logits.softmax(-1)
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.iteration, PRUNE_STREAM))
        kept = select_members(self.pruning, probs, y, g, self.pap_rule, self.pie_lambda, self.pie_rule)
        pruned = [j for j in range(len(self.members)) if j not in kept]
        record = {"kept": [self.member_specs[j].iteration for j in kept],
                  "pruned": [self.member_specs[j].iteration for j in pruned]}
        if self.prune_in_eval:
            self.members = nn.ModuleList(self.members[j] for j in kept)
            self.member_specs = [self.member_specs[j] for j in kept]
            self.ensemble_weights = self.ensemble_weights[kept].clone()
            self.in_training = [True] * len(kept)
        else:
            self.in_training = [j in kept for j in range(len(self.members))]
        return record

    # ---- metrics -----------------------------------------------------------------------------------------
    def _diversity(self) -> dict[str, float]:
        """Diversity of the evaluated ensemble's members on the fixed held-out batches (argmax predictions)."""
        batches = self._diversity_batches
        self.members.eval()
        with torch.no_grad():
            preds = torch.cat([torch.stack([m(x)[0].argmax(-1) for m in self.members]) for x, _ in batches], 1)
        y = torch.cat([b[1] for b in batches])
        return diversity_report(preds.cpu().numpy(), y.cpu().numpy())

    def on_train_epoch_end(self) -> None:
        last = self.history[-1] if self.history else None
        if last is None or last["iteration"] != self.current_epoch:
            return
        self.log_replicated("saep/ensemble_size", float(len(self.members)))
        self.log_replicated("saep/members_in_training", float(sum(self.in_training)))
        self.log_replicated("saep/pruned", float(len(last["pruned"])))
        self.log_replicated("saep/selected_depth", float(last["selected"]["depth"]))
        self.log_replicated("saep/ensemble_params", float(self.num_parameters))
        for key, value in last["diversity"].items():
            self.log_replicated(f"saep/diversity_{key}", value)

    def variant(self) -> dict[str, Any]:
        return {**super().variant(), "pruning": self.pruning}

    def summary_extras(self) -> dict[str, Any]:
        return {"iterations": self.history, "ensemble": self.genotype().to_dict(),
                "ensemble_size": len(self.members), "pruning": self.pruning, "pap_rule": self.pap_rule,
                "pie_rule": self.pie_rule, "prune_in_eval": self.prune_in_eval}

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightning_nas"]["saep"] = {
            "iteration": self.iteration, "step_in_iteration": self.step_in_iteration, "best_depth": self.best_depth,
            "history": self.history,
            "members": [asdict(s) for s in self.member_specs], "candidates": [asdict(s) for s in self.candidate_specs],
            "in_training": self.in_training}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["lightning_nas"].get("saep")
        if state is None:
            raise CheckpointError("the checkpoint has no SAEP state: resume SAEP only from its own checkpoints")
        self.iteration, self.best_depth, self.history = state["iteration"], state["best_depth"], state["history"]
        self.step_in_iteration = state["step_in_iteration"]
        self.member_specs = [SubnetSpec(**s) for s in state["members"]]
        self.members = nn.ModuleList(self._subnet(s) for s in self.member_specs)
        for p in self.members.parameters():
            p.requires_grad_(False)
        self.in_training = list(state["in_training"])
        self.ensemble_weights = torch.zeros(len(self.member_specs))
        self.candidate_specs = [SubnetSpec(**s) for s in state["candidates"]]
        self.candidates = nn.ModuleList(Candidate(self._subnet(s), self._candidate_mixture(), self._candidate_bias())
                                        for s in self.candidate_specs)

