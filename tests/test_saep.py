"""SAEP (Bian et al., IEEE TNNLS 2021): pruning criteria on hand-made predictions, the diversity measures, the
ensemble, exact resume, 2-process DDP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_utils import assert_same_weights, run_in_process, run_two_process_ddp, uninterrupted_and_resumed, weights
from conftest import REPO

from lightning_nas.analysis.diversity import normalized_mi, pairwise_disagreement, tdac, variation_of_information
from lightning_nas.methods.ensembles.pruning import pap, pap_criterion, pie, pie_greedy_step, prs

TINY_SAEP = REPO / "experiments" / "tiny" / "saep.yaml"


# ---- diversity, by hand (the official code's formulas in plain numpy) -----------------------------------------
def entropy_of(*columns: np.ndarray) -> float:
    _, counts = np.unique(np.stack(columns, 1), axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    return entropy_of(a) + entropy_of(b) - entropy_of(a, b)


def test_mi_vi_and_disagreement_equal_the_definitions():
    rng = np.random.default_rng(0)
    a, b, y = (rng.integers(0, 4, 200) for _ in range(3))
    assert normalized_mi(a, y) == pytest.approx(mutual_information(a, y) / math.sqrt(entropy_of(a) * entropy_of(y)))
    assert variation_of_information(a, b) == pytest.approx(1 - mutual_information(a, b) / entropy_of(a, b))
    assert variation_of_information(a, a) == pytest.approx(0.0, abs=1e-12)
    lam = 0.5
    assert tdac(a, b, y, lam) == pytest.approx(lam * variation_of_information(a, b)
                                               + (1 - lam) * (normalized_mi(a, y) + normalized_mi(b, y)) / 2)
    assert tdac(a, a.copy(), y, lam) == 0.0  # the official code: identical predictions add no diversity
    preds = np.array([[0, 1, 1, 2], [0, 1, 2, 2], [1, 1, 1, 2]])
    # pairs: (0,1) 1/4, (0,2) 1/4, (1,2) 2/4 -> mean 1/3
    assert pairwise_disagreement(preds) == pytest.approx(1 / 3)
    assert normalized_mi(np.zeros(10), y[:10]) == 0.0


# ---- the criteria ---------------------------------------------------------------------------------------------
def one_hot(preds: list[list[int]], classes: int = 3, weight: float = 1.0) -> torch.Tensor:
    return weight * torch.nn.functional.one_hot(torch.tensor(preds), classes).double()


def test_pap_keeps_exactly_the_members_whose_removal_raises_the_error():
    y = torch.tensor([0, 1, 2, 0])
    # member 0 right on samples 0-2 (its removal breaks ties toward errors), member 1 mostly wrong,
    # member 2 right on samples 0, 3 and the deciding vote with member 0 elsewhere
    probs = torch.stack([one_hot([[0, 1, 2, 1]])[0] * 1.0, one_hot([[1, 2, 0, 1]])[0] * 0.9,
                         one_hot([[0, 1, 2, 0]])[0] * 0.8])
    raised = pap_criterion(probs, y)
    base = float((probs.sum(0).argmax(-1) != y).float().mean())
    for j in range(3):  # the criterion is err(F without j) - err(F)
        without = probs.sum(0) - probs[j]
        assert raised[j] == pytest.approx(float((without.argmax(-1) != y).float().mean()) - base)
    kept = pap(probs, y, "paper")
    assert kept == [j for j in range(3) if raised[j] > 0] and kept
    official = pap(probs, y, "official")
    assert all(raised[j] < 0 for j in official) or len(official) == 2
    assert set(kept).isdisjoint(official) or len(official) == 2
    # nobody qualifies: the two with the largest criterion are kept
    same = torch.stack([one_hot([[0, 1, 2, 0]])[0]] * 4)
    assert pap(same, y) == [0, 1] and pap(same[:2], y) == [0, 1]


def test_pie_greedy_choice_equals_brute_force_on_four_members():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 60)
    preds = np.stack([np.where(rng.random(60) < acc, y, rng.integers(0, 3, 60)) for acc in (0.9, 0.7, 0.5, 0.3)])

    def objective(p: int, selected: list[int]) -> float:  # the definitions, not the implementation's helpers
        total = 0.0
        for q in selected:
            vi = 1 - mutual_information(preds[p], preds[q]) / entropy_of(preds[p], preds[q])
            mi = [mutual_information(h, y) / math.sqrt(entropy_of(h) * entropy_of(y)) for h in (preds[p], preds[q])]
            total += 0.5 * vi + 0.5 * sum(mi) / 2
        return total

    for start in range(4):
        selected = [start]
        while len(selected) < 3:
            rest = [p for p in range(4) if p not in selected]
            brute = max(rest, key=lambda p: (objective(p, selected), -p))
            assert pie_greedy_step(preds, y, selected, 0.5) == brute
            selected.append(brute)
    kept = pie(preds, y, torch.Generator().manual_seed(0))
    assert len(kept) == 3 and kept == sorted(kept)
    assert pie(preds[:2], y, torch.Generator().manual_seed(0)) == [0, 1]


def test_prs_never_drops_below_two_and_drops_at_most_one():
    drops = 0
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        for n in (1, 2, 3, 5):
            kept = prs(n, g)
            assert len(kept) >= min(n, 2) and len(kept) >= n - 1 and set(kept) <= set(range(n))
            if n <= 2:
                assert kept == list(range(n))
            drops += len(kept) < n
    assert 150 < drops < 250  # probability 0.5 per call with n > 2 (400 calls)


# ---- the ensemble ---------------------------------------------------------------------------------------------
def test_an_ensemble_of_one_member_equals_that_member():
    from lightning_nas.methods import SAEP
    from lightning_nas.methods.ensembles.saep import SubnetSpec

    module = SAEP(channels=4, num_classes=10, in_channels=1)
    spec = SubnetSpec(module.candidate_specs[0].genotype, 1, 0, 0)
    net = module._subnet(spec).eval()
    module.members.append(net)
    module.member_specs.append(spec)
    module.ensemble_weights = torch.tensor([0.7])
    module.in_training, module.in_eval = [True], [True]
    module.eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(module.eval_logits(x), 0.7 * net(x)[0])
        assert torch.equal(module.eval_logits(x).argmax(-1), net(x)[0].argmax(-1))


def test_saep_resume_mid_iteration_equals_uninterrupted(tmp_path, capsys):
    # 4 steps per iteration: the cut falls in iteration 2, after its second step
    full, resumed, _ = uninterrupted_and_resumed(TINY_SAEP, 6, tmp_path, capsys)
    assert_same_weights(full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (full, resumed))
    assert sa["iterations"] == sb["iterations"] and sa["ensemble"] == sb["ensemble"]
    # PIE prunes one member of three: 3 iterations leave 2 members, and the kept ones are named
    assert sa["ensemble_size"] == 2 and len(sa["iterations"]) == 3 and sa["iterations"][-1]["pruned"]
    assert sa["global_step"] == 12


def test_official_masking_keeps_pruned_members_in_evaluation(tmp_path, capsys):
    run = run_in_process("fit", "--config", str(TINY_SAEP), "--run.root", str(tmp_path), "--model.init_args.pruning",
                         "pap", "--model.init_args.pap_rule", "official", "--model.init_args.prune_in_eval", "false",
                         "--trainer.max_epochs", "4", capsys=capsys)
    summary = json.loads((run / "summary.json").read_text())
    members = summary["ensemble"]["members"]
    assert len(members) == 4 and all(m["in_evaluation"] for m in members) and summary["ensemble_size"] == 4
    state = weights(run / "checkpoints" / "last.ckpt")
    assert state["ensemble_weights"].shape == (4,)


def test_ddp_two_cpu_processes_keep_members_and_mixture_weights_identical(tmp_path):
    _, prefix = run_two_process_ddp(TINY_SAEP, tmp_path, "StateRecorder")
    for epoch in range(3):
        r0, r1 = (torch.load(Path(f"{prefix}.rank{r}.epoch{epoch}.pt")) for r in (0, 1))
        assert r0.keys() == r1.keys() and any(k.startswith("members.") for k in r0)
        for key in r0:
            assert torch.equal(r0[key], r1[key]), (epoch, key)


def test_bad_saep_config_is_refused():
    from lightning_nas.errors import ConfigError
    from lightning_nas.methods import SAEP

    with pytest.raises(ConfigError, match="initial_depth"):
        SAEP(initial_depth=0)
    with pytest.raises(ConfigError, match="pruning"):
        SAEP(pruning="magic")  # type: ignore[arg-type]


def test_pap_fallback_ties_follow_each_rule():
    """Nobody qualifies and the criteria tie: the official argsort(...)[::-1][:2] keeps the two highest indices (the
    newest members), the paper rule the two lowest; untied criteria pick the same two under both orders."""
    y = torch.tensor([0, 1, 2, 0])
    same = torch.stack([one_hot([[0, 1, 2, 0]])[0]] * 5)
    assert pap_criterion(same, y) == [0.0] * 5
    assert pap(same, y, "official") == [3, 4] and pap(same, y, "paper") == [0, 1]
    rng = np.random.default_rng(1)
    for _ in range(20):  # the official call restated on random criteria, ties included
        probs = torch.tensor(rng.random((5, 8, 3)))
        labels = torch.tensor(rng.integers(0, 3, 8))
        score = [-d for d in pap_criterion(probs, labels)]
        expect = [k for k, v in enumerate(score) if v > 0.0] or sorted(np.argsort(score).tolist()[::-1][:2])
        assert pap(probs, labels, "official") == expect


def test_vi_of_constant_predictions_is_ours_by_default_and_the_officials_on_request():
    """The official VI of two constant vectors is 1 (I / check_zero(0) = 0 / 1e-18); TDAC of two different
    constants is then lambda; ours is 0 (nothing differs in information)."""
    a, b, y = np.zeros(10, int), np.ones(10, int), np.arange(10) % 3
    assert variation_of_information(a, b) == 0.0 and variation_of_information(a, b, official=True) == 1.0
    assert tdac(a, b, y, 0.5) == 0.0 and tdac(a, b, y, 0.5, official=True) == 0.5
    assert tdac(a, a.copy(), y, 0.5, official=True) == 0.0  # identical: the official early return
    c = np.array([0, 1] * 5)  # one constant side: both give 1 - 0 / H(X, Y) = 1
    assert variation_of_information(a, c) == variation_of_information(a, c, official=True) == pytest.approx(1.0)
    preds = np.stack([a, b, c, (c + 1) % 3])
    g = torch.Generator().manual_seed(0)
    assert len(pie(preds, y, g, 0.5, official=True)) == 3
