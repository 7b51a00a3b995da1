"""Diversity of an ensemble's members from their argmax predictions (SAEP, Bian et al., IEEE TNNLS 2021; official code
eustomaqua/SAEP ``data_entropy.py``), with scikit-learn's mutual-information scores.

- pairwise disagreement: the mean over member pairs of the fraction of samples on which the two predict different
  classes (the official ``pairwise_measure_all_without_label``);
- MI(X, Y) = I(X; Y) / sqrt(H(X) H(Y)), the normalised mutual information (scikit-learn's
  ``normalized_mutual_info_score`` with the geometric mean); 0 when either side is constant;
- VI(X, Y) = 1 - I(X; Y) / H(X, Y), the normalised variation of information (``mutual_info_score`` over the joint
  entropy of the contingency table); 0 for identical predictions. Two constant vectors have H(X, Y) = 0: VI is 0 here
  (no information differs); the official ``VI`` divides by ``check_zero(0) = 1e-18`` and gives 1 (``official=True``);
- TDAC(h_i, h_j) = lambda VI(h_i, h_j) + (1 - lambda) (MI(h_i, y) + MI(h_j, y)) / 2, the pairwise objective of
  PIE's greedy selection (0 for two members with identical predictions, as the official code's X == Y test).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def _labels(a: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(a).reshape(-1)


def normalized_mi(a: Sequence[int], b: Sequence[int]) -> float:
    a, b = _labels(a), _labels(b)
    if len(np.unique(a)) < 2 or len(np.unique(b)) < 2:
        return 0.0  # I = 0; scikit-learn would call two constant labelings a perfect match (1.0)
    return float(normalized_mutual_info_score(a, b, average_method="geometric"))


def variation_of_information(a: Sequence[int], b: Sequence[int], official: bool = False) -> float:
    """Normalised VI; for two constant vectors 0, or with ``official`` the official code's 1 (its 0 / 1e-18)."""
    a, b = _labels(a), _labels(b)
    joint = entropy(contingency_matrix(a, b).ravel())
    if joint == 0:  # both constant: I = 0 and H(X, Y) = 0
        return 1.0 if official else 0.0
    return float(1.0 - mutual_info_score(a, b) / joint)


def tdac(a: Sequence[int], b: Sequence[int], y: Sequence[int], lam: float, official: bool = False) -> float:
    """0 for identical predictions (the official ``if X == Y: return 0.0``: a duplicate adds no diversity); with
    ``official`` two different constant vectors have VI 1 (TDAC ``lam``) as in the official code, else 0."""
    if np.array_equal(_labels(a), _labels(b)):
        return 0.0
    vi = variation_of_information(a, b, official)
    return lam * vi + (1 - lam) * (normalized_mi(a, y) + normalized_mi(b, y)) / 2


def pairwise_disagreement(preds: np.ndarray) -> float:
    """Mean over member pairs of the fraction of samples where their predictions differ; 0 for one member."""
    preds = np.asarray(preds)
    n = len(preds)
    if n < 2:
        return 0.0
    total = sum(float(np.mean(preds[i] != preds[j])) for i in range(n) for j in range(i + 1, n))
    return total * 2 / (n * (n - 1))


def diversity_report(preds: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The ensemble's diversity numbers for logging: pairwise disagreement, mean pairwise VI, mean MI(h, y)."""
    preds = np.asarray(preds)
    n = len(preds)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return {
        "disagreement": pairwise_disagreement(preds),
        "vi": float(np.mean([variation_of_information(preds[i], preds[j]) for i, j in pairs])) if pairs else 0.0,
        "mi_label": float(np.mean([normalized_mi(p, y) for p in preds])) if n else 0.0,
    }
