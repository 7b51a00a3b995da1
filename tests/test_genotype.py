"""Genotype derivation, serialisation and published parameter counts."""

from __future__ import annotations

import json
import re

import pytest
import torch

from lightning_nas.errors import GenotypeError
from lightning_nas.search_spaces.darts import PRIMITIVES, PUBLISHED, Genotype, NetworkCIFAR, count_parameters
from lightning_nas.search_spaces.darts.eval_network import NetworkImageNet
from lightning_nas.search_spaces.darts.genotype import derive_cell
from lightning_nas.search_spaces.darts.resolve import load_genotype

OP = {name: i for i, name in enumerate(PRIMITIVES)}


def test_derivation_on_hand_set_weights():
    w = torch.full((14, 8), 0.01)
    # node 2 (edges 0, 1): edge 1 strongest via sep_conv_3x3, edge 0 via max_pool
    w[0, OP["max_pool_3x3"]] = 0.5
    w[1, OP["sep_conv_3x3"]] = 0.9
    # node 3 (edges 2, 3, 4): `none` is strongest on edge 2 but must be ignored both for ranking and choice
    w[2, OP["none"]] = 0.99
    w[2, OP["skip_connect"]] = 0.2
    w[3, OP["dil_conv_5x5"]] = 0.6
    w[4, OP["avg_pool_3x3"]] = 0.7
    # node 4 (edges 5..8): edges 8 and 6
    w[8, OP["sep_conv_5x5"]] = 0.8
    w[6, OP["dil_conv_3x3"]] = 0.4
    # node 5 (edges 9..13): edges 13 and 9
    w[13, OP["skip_connect"]] = 0.3
    w[9, OP["max_pool_3x3"]] = 0.25
    gene = derive_cell(w, PRIMITIVES)
    assert gene == [("sep_conv_3x3", 1), ("max_pool_3x3", 0),
                    ("avg_pool_3x3", 2), ("dil_conv_5x5", 1),
                    ("sep_conv_5x5", 3), ("dil_conv_3x3", 1),
                    ("skip_connect", 4), ("max_pool_3x3", 0)]


def test_derivation_ties_follow_the_official_order():
    """Equal weights: lower input index first, first op in PRIMITIVES order after `none`."""
    gene = derive_cell(torch.full((14, 8), 0.125), PRIMITIVES)
    assert gene[:2] == [("max_pool_3x3", 0), ("max_pool_3x3", 1)]


def test_derivation_without_none():
    prims = [p for p in PRIMITIVES if p != "none"]
    w = torch.zeros(14, 7)
    w[:, prims.index("sep_conv_3x3")] = 1.0
    assert {op for op, _ in derive_cell(w, prims)} == {"sep_conv_3x3"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_text_and_json_round_trip(name):
    g = PUBLISHED[name]
    assert Genotype.from_text(g.to_text()) == g
    assert Genotype.from_json(g.to_json()) == g


def test_text_form_accepts_range_and_assignment():
    text = ("DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
            "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
            "('dil_conv_3x3', 2)], normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), "
            "('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), "
            "('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=range(2, 6))")
    assert load_genotype(text) == PUBLISHED["DARTS_V2"]


def test_unknown_op_is_named():
    text = PUBLISHED["DARTS_V2"].to_text().replace("dil_conv_3x3", "dil_conv_9x9")
    with pytest.raises(GenotypeError, match="dil_conv_9x9"):
        Genotype.from_text(text)


def test_bad_input_index_and_unresolvable_spec(tmp_path):
    with pytest.raises(GenotypeError, match="input 5"):
        Genotype(normal=(("sep_conv_3x3", 5), ("sep_conv_3x3", 0)), normal_concat=(2,),
                 reduce=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1)), reduce_concat=(2,))
    with pytest.raises(GenotypeError, match="cannot resolve genotype"):
        load_genotype(str(tmp_path / "nope.json"))


def test_darts_v2_parameter_count_matches_official():
    """The official code logs "param size = 3.349342MB" for DARTS_V2 on CIFAR-10 (auxiliary head excluded)."""
    assert count_parameters(NetworkCIFAR(PUBLISHED["DARTS_V2"])) == 3_349_342


def test_darts_v2_imagenet_parameter_count():
    """DARTS reports 4.7M parameters for its ImageNet (mobile) network; the official code logs 4.718752MB."""
    assert count_parameters(NetworkImageNet(PUBLISHED["DARTS_V2"])) == 4_718_752


@pytest.mark.parametrize("name, published_millions", [
    ("PDARTS", 3.4), ("PC_DARTS_cifar", 3.6), ("DrNAS_cifar10", 4.1),
])
def test_published_cells_match_their_papers_to_the_reported_precision(name, published_millions):
    assert round(count_parameters(NetworkCIFAR(PUBLISHED[name])) / 1e6, 1) == published_millions


def test_eval_network_forward_and_aux_head():
    net = NetworkCIFAR(PUBLISHED["DARTS_V2"], channels=8, layers=5, num_classes=10)
    net.drop_path_prob = 0.2
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is not None and aux.shape == (2, 10)
    net.eval()
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert aux is None


def test_a_nas_bench_201_run_directory_points_to_train_cell(tmp_path):
    """Retraining (or describing) a NAS-Bench-201 search's run directory: not "missing the keys", but the fix."""
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    (tmp_path / "genotype.json").write_text(json.dumps({"epoch": 1, "genotype": {"space": "nb201", "arch": arch}}))
    with pytest.raises(GenotypeError, match=r"is a nb201 cell, not a DARTS-space genotype: train it with TrainCell.*"
                                            + re.escape(f"--model.init_args.arch '{arch}'")):
        load_genotype(str(tmp_path))
