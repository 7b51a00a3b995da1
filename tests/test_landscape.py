"""Loss-landscape slices, gradient variance, cell width/depth and rewiring (Shu et al., ICLR 2020; Li et al.,
NeurIPS 2018)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from cli_utils import run_in_process
from conftest import REPO
from torch import nn

from lightning_nas.analysis.landscape import (
    batch_gradients,
    bn_mode,
    displaced,
    evaluate,
    filter_normalized_direction,
    gradient_variance,
    grid,
    landscape_slice,
    sharpness,
)
from lightning_nas.search_spaces.darts import PUBLISHED
from lightning_nas.search_spaces.darts.cell_shape import cell_depth, cell_width
from lightning_nas.search_spaces.darts.genotype import Genotype
from lightning_nas.search_spaces.darts.rewire import random_conn, widest, width_buckets


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


def batches(n: int = 3, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def test_filter_normalisation_gives_each_filter_the_weights_filter_norm():
    net = small_net()
    params = list(net.parameters())
    d = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    for p, t in zip(params, d):
        assert t.shape == p.shape
        if p.dim() <= 1:  # biases and BN affine parameters: ignored, as the paper
            assert torch.count_nonzero(t) == 0
        else:
            torch.testing.assert_close(t.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
            assert not torch.allclose(t, p)


def test_slice_centre_is_the_unperturbed_loss_and_weights_are_restored_bit_for_bit():
    net = small_net()
    data = batches()
    with torch.no_grad():  # non-trivial running statistics
        net.train()
        net(torch.cat([x for x, _ in data]))
    params = list(net.parameters())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    dirs = [filter_normalized_direction(params, g) for _ in range(2)]
    with bn_mode(net, "eval"):
        expected = evaluate(net, F.cross_entropy, data)
        rows = landscape_slice(net, F.cross_entropy, params, dirs, grid(5, (-1.0, 1.0), 2), data)
    centre = [r for r in rows if r["x1"] == 0 and r["x2"] == 0]
    assert len(rows) == 25 and len(centre) == 1
    assert centre[0]["loss"] == expected[0] and centre[0]["acc"] == expected[1]
    assert sharpness(rows) > 0  # a trained-or-not net: the loss rises somewhere on a +-1 filter-normalised box
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    # a point off the centre evaluates the displaced weights
    with displaced(params, dirs, (1.0, -1.0)):
        torch.testing.assert_close(params[0], before["0.weight"] + dirs[0][0] - dirs[1][0])


def test_train_bn_mode_uses_batch_statistics_and_keeps_running_ones():
    net = small_net()
    before = net[1].running_mean.clone()
    with bn_mode(net, "train"):
        assert net.training
        net(batches(1)[0][0])
    assert torch.equal(net[1].running_mean, before) and net.training


def test_gradient_variance_is_zero_for_identical_batches_and_matches_a_hand_computation():
    torch.manual_seed(0)
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)

    def logits(x: torch.Tensor) -> torch.Tensor:
        return x @ w.T

    same = [batches(1)[0]] * 4
    xs = [(torch.randn(5, 2, dtype=torch.float64), torch.randint(0, 3, (5,))) for _ in range(4)]
    zero, mean_sq = gradient_variance(batch_gradients(logits, F.cross_entropy, [w], [(x.flatten(1)[:, :2].double(), y)
                                                                                       for x, y in same]))
    assert zero == 0.0 and mean_sq > 0
    # by hand: dCE/dW = (softmax(xW^T) - onehot(y))^T x / B for each batch
    hand = []
    for x, y in xs:
        p = torch.softmax(x @ w.detach().T, 1) - F.one_hot(y, 3).double()
        hand.append((p.T @ x / len(y)).reshape(-1))
    hand = torch.stack(hand)
    mean = hand.mean(0)
    expected = sum(float(((h - mean) ** 2).sum()) for h in hand) / len(hand)
    variance, _ = gradient_variance(batch_gradients(logits, F.cross_entropy, [w], xs))
    assert variance == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name, width, depth", [("NASNet", 5.0, 2), ("AmoebaNet", 4.0, 4), ("ENAS", 5.0, 2),
                                                ("DARTS_V2", 3.5, 3), ("SNAS_mild", 4.0, 2)])
def test_width_and_depth_are_the_papers_values(name, width, depth):
    normal = PUBLISHED[name].normal
    assert (cell_width(normal), cell_depth(normal)) == (width, depth)


def test_chain_and_input_only_cells():
    chain = (("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 2), ("sep_conv_3x3", 2),
             ("sep_conv_3x3", 3), ("sep_conv_3x3", 3), ("sep_conv_3x3", 4), ("sep_conv_3x3", 4))
    assert (cell_width(chain), cell_depth(chain)) == (1.0, 5)


def test_random_conn_is_the_official_one_and_keeps_every_op():
    v2 = PUBLISHED["DARTS_V2"]
    # shuyao95/Understanding-NAS genotypes.py: DARTS_CONN1 = random_conn(DARTS_V2, num_ops=8, seed=1)
    official = Genotype(
        (("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 3), ("skip_connect", 4), ("dil_conv_3x3", 2)), (2, 3, 4, 5),
        (("max_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 0),
         ("skip_connect", 1), ("skip_connect", 1), ("max_pool_3x3", 4)), (2, 3, 4, 5))
    assert random_conn(v2, 1) == official
    for seed in range(1, 30):
        variant = random_conn(v2, seed)
        for cell in ("normal", "reduce"):
            new, old = getattr(variant, cell), getattr(v2, cell)
            assert [op for op, _ in new] == [op for op, _ in old]
            assert all(0 <= src < 2 + k // 2 for k, (_, src) in enumerate(new))  # only earlier nodes
    buckets = width_buckets(v2, [2.0, 2.5, 3.0, 3.5], per_bucket=3)
    assert all(len(v) == 3 and all(cell_width(g.normal) == w for _, g in v) for w, v in buckets.items())


def test_widest_variant_reads_only_cell_inputs():
    for name in ("DARTS_V2", "AmoebaNet", "ENAS"):
        g = widest(PUBLISHED[name])
        for cell in ("normal", "reduce"):
            gene = getattr(g, cell)
            assert [op for op, _ in gene] == [op for op, _ in getattr(PUBLISHED[name], cell)]
            assert cell_width(gene) == len(gene) / 2 and cell_depth(gene) == 2


def test_callbacks_leave_the_module_and_the_global_rng_untouched():
    from lightning_nas.callbacks import GradientVariance, HessianEigenvalue, LossLandscapeSlice
    from lightning_nas.methods import Retrain

    module = Retrain("DARTS_V2", channels=4, layers=3, auxiliary=False, drop_path_prob=0.1)
    module.net.drop_path_prob = 0.1
    data = [(x.repeat(1, 1, 6, 6)[:, :, :32, :32], y) for x, y in batches(2)]
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    for cb in (LossLandscapeSlice(points=3, gradient_variance=True, bn_mode="train"), GradientVariance(),
               HessianEigenvalue(target="weights", iterations=3)):
        cb.batches = data
        out = cb.compute(module)
        assert all(v == v for v in (out if isinstance(out, tuple) else [r["loss"] for r in out]))
    assert torch.equal(torch.get_rng_state(), rng) and module.net.drop_path_prob == 0.1
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_alpha_slice_of_a_supernet_search(tiny_supernet_factory):
    from lightning_nas.callbacks import LossLandscapeSlice
    from lightning_nas.methods import DARTS

    module = DARTS(supernet=tiny_supernet_factory)
    data = [(x.repeat(1, 1, 2, 2)[:, :, :8, :8], y) for x, y in batches(1)]
    cb = LossLandscapeSlice(target="alpha", points=5)
    cb.batches = data
    rows = cb.compute(module)
    module.supernet.eval()
    with torch.no_grad():
        assert rows[2]["x1"] == 0 and rows[2]["loss"] == float(F.cross_entropy(module.supernet(data[0][0]),
                                                                                 data[0][1]))
    assert len({r["loss"] for r in rows}) > 1  # alpha moves the loss


def test_single_path_search_refuses_the_landscape_with_a_clear_message():
    from lightning_nas.errors import ConfigError
    from lightning_nas.methods import SinglePathSearch

    with pytest.raises(ConfigError, match="retrain the picked cell"):
        SinglePathSearch().analysis_parameters("weights")


def test_tiny_landscape_config_writes_slices_and_logs_every_analysis(tmp_path, capsys):
    run = run_in_process("fit", "--config", str(REPO / "experiments" / "tiny" / "landscape_retrain.yaml"),
                         "--run.root", str(tmp_path), capsys=capsys)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    variance = [float(r["landscape/grad_variance_weights"]) for r in rows if r.get("landscape/grad_variance_weights")]
    eig = [float(r["landscape/hessian_eig_weights"]) for r in rows if r.get("landscape/hessian_eig_weights")]
    assert len(variance) == 2 and all(v > 0 for v in variance) and len(eig) == 2 and all(e == e for e in eig)
    grid_rows = list(csv.DictReader(open(run / "landscape" / "slice_weights_2d_epoch2.csv")))
    assert len(grid_rows) == 9 and all(float(r["grad_variance"]) > 0 for r in grid_rows)
    png = (run / "landscape" / "slice_weights_2d_epoch2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"]["landscape/slice_weights_sharpness"] >= 0


def test_weight_hessian_of_a_rewired_cell_with_an_unused_input():
    """A rewired cell whose edges never read c_{k-2} leaves that input's preprocessing out of the graph."""
    from lightning_nas.callbacks.landscape import dominant_eigenvalue

    w = torch.tensor([[2.0, 0.0], [0.0, 0.5]], requires_grad=True)
    unused = torch.ones(3, requires_grad=True)
    x = torch.tensor([1.0, 1.0])
    eig, _ = dominant_eigenvalue(lambda: (x @ w @ w.T @ x) ** 1, [w, unused], iterations=50)
    # loss = sum_i (x^T w)_i^2 = (w00 + w10)^2 + (w01 + w11)^2: Hessian eigenvalues 4 (twice) and 0
    assert eig == pytest.approx(4.0, rel=1e-4)
