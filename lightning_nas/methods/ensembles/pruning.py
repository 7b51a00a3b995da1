"""SAEP's pruning criteria (Bian et al., IEEE TNNLS 2021, arXiv 1910.00370; official code eustomaqua/SAEP @ 729bab2,
``ensemble_weighted.py``), as small functions of the members' outputs on fixed batches. Each returns the sorted
indices of the members to KEEP (the official ``pruned_list`` also holds the kept members). With two members or
fewer every criterion keeps all (the official code prunes only larger ensembles).

- ``keep_all``: the unpruned ensemble (AdaNet).
- ``prs`` (random): with probability 0.5 drop one uniformly chosen member.
- ``pap`` (accuracy): F = sum_j p_j with p_j = w_j softmax(logits_j) (the weighted variant); for each member,
  diff_j = err(F without j) - err(F), 0/1 argmax errors. ``rule="paper"`` (default, the definition: a member is
  valuable when removing it raises the error) keeps every j with diff_j > 0; ``rule="official"`` keeps every j
  with err(F) - err(F without j) > 0, the official code's sign (it keeps the members whose removal LOWERS the
  error). When no member qualifies the two with the largest criterion are kept: under ``official`` as the official
  ``np.argsort(error_rate_diff)[::-1][:2]`` (on ties the highest indices, the newest members; the same call here),
  under ``paper`` the lowest indices on ties (our choice).
- ``pie`` (information entropy): the official COMEP greedy selection of n - 1 members: a first member drawn at
  random (seeded here), then repeatedly the member maximising sum_{q in S} TDAC(p, q) (ties: the lowest index),
  TDAC from ``lightning_nas.analysis.diversity`` on argmax predictions, lambda 0.5; ``official`` uses the official
  VI of two constant prediction vectors (1, ours 0).
"""

from __future__ import annotations

import numpy as np
import torch

from lightning_nas.analysis.diversity import tdac


def keep_all(n: int) -> list[int]:
    return list(range(n))


def prs(n: int, generator: torch.Generator) -> list[int]:
    kept = list(range(n))
    if n <= 2:
        return kept
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        kept.pop(int(torch.randint(0, n, (1,), generator=generator)))
    return kept


def error(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float((probs.argmax(-1) != y).float().mean())


def pap_criterion(probs: torch.Tensor, y: torch.Tensor) -> list[float]:
    """err(F without j) - err(F) per member; ``probs`` is [members, samples, classes] of w_j softmax(logits_j)."""
    total = probs.sum(0)
    base = error(total, y)
    return [error(total - probs[j], y) - base for j in range(len(probs))]


def pap(probs: torch.Tensor, y: torch.Tensor, rule: str = "paper") -> list[int]:
    n = len(probs)
    if n <= 2:
        return list(range(n))
    raised = pap_criterion(probs, y)
    score = raised if rule == "paper" else [-d for d in raised]
    kept = [j for j, s in enumerate(score) if s > 0]
    if not kept:
        if rule == "official":  # the official call itself: reversed argsort keeps the highest indices on ties
            kept = sorted(np.argsort(np.asarray(score)).tolist()[::-1][:2])
        else:  # the two largest, the lowest indices on ties
            kept = sorted(sorted(range(n), key=lambda j: -score[j])[:2])
    return kept


def pie_greedy_step(preds: np.ndarray, y: np.ndarray, selected: list[int], lam: float, official: bool = False) -> int:
    """The member outside ``selected`` maximising sum_{q in selected} TDAC(p, q) (the lowest index on ties)."""
    best, best_value = -1, -np.inf
    for p in range(len(preds)):
        if p in selected:
            continue
        value = sum(tdac(preds[p], preds[q], y, lam, official) for q in selected)
        if value > best_value:
            best, best_value = p, value
    return best


def pie(preds: np.ndarray, y: np.ndarray, generator: torch.Generator, lam: float = 0.5,
        official: bool = False) -> list[int]:
    n = len(preds)
    if n <= 2:
        return list(range(n))
    selected = [int(torch.randint(0, n, (1,), generator=generator))]
    while len(selected) < n - 1:
        selected.append(pie_greedy_step(preds, y, selected, lam, official))
    return sorted(selected)


def select_members(criterion: str, probs: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                   pap_rule: str = "paper", pie_lambda: float = 0.5, pie_rule: str = "paper") -> list[int]:
    """The members ``criterion`` keeps, from their weighted probabilities ``probs`` [members, samples, classes]
    on fixed batches with labels ``y``."""
    n = len(probs)
    if criterion == "none":
        return keep_all(n)
    if criterion == "prs":
        return prs(n, generator)
    if criterion == "pap":
        return pap(probs, y, pap_rule)
    if criterion == "pie":
        return pie(probs.argmax(-1).cpu().numpy(), y.cpu().numpy(), generator, pie_lambda, pie_rule == "official")
    raise ValueError(f"unknown pruning criterion {criterion!r}; use one of {list(CRITERIA)}")


CRITERIA = ("none", "prs", "pap", "pie")
