"""MF-KD: distillation losses, the teacher, the low-fidelity training, the BO strategies and the searches."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from cli_utils import assert_same_weights, run_in_process, uninterrupted_and_resumed
from conftest import REPO

from lightning_nas.cli import main
from lightning_nas.data.augment import BatchAugment
from lightning_nas.data.sources import ImageData
from lightning_nas.errors import CheckpointError, ConfigError
from lightning_nas.methods.discrete.bayes_opt import GPUCB
from lightning_nas.methods.discrete.low_fidelity import LowFidelityRecipe, LowFidelitySplit, train_low_fidelity
from lightning_nas.methods.discrete.mf_kd import HIGH, LOW, CoKrigingKernel, MultiFidelityUCB, fidelity_schedule
from lightning_nas.methods.training.cell_training import CellNetwork, NetworkSpec, Teacher, distillation_loss
from lightning_nas.methods.training.distill_losses import NST, CrossEntropy, HintonKD, Outputs, hinton_kd, nst_mmd2
from lightning_nas.reproducibility import mix_seed
from lightning_nas.search_spaces import get_space
from lightning_nas.search_spaces.nb201.arch import NB201Arch

NB201 = get_space("nb201")

TINY = REPO / "experiments" / "tiny"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
OTHER = "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"


# ---- losses --------------------------------------------------------------------------------------------------
def test_hinton_kd_equals_the_formula_on_hand_made_logits():
    s = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 2.0, 0.0], [-2.0, 0.5, 1.5]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    T, alpha = 4.0, 0.3
    expected = 0.0
    for i in range(2):  # per sample: (1 - a) CE + a T^2 sum_k p_t log(p_t / p_s), averaged
        p_s = [math.exp(v / T) for v in s[i].tolist()]
        p_t = [math.exp(v / T) for v in t[i].tolist()]
        p_s = [v / sum(p_s) for v in p_s]
        p_t = [v / sum(p_t) for v in p_t]
        kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
        ce = -math.log(math.exp(s[i, y[i]].item()) / sum(math.exp(v) for v in s[i].tolist()))
        expected += ((1 - alpha) * ce + alpha * T * T * kl) / 2
    assert hinton_kd(s, t, y, T, alpha).item() == pytest.approx(expected, rel=1e-12)
    loss = HintonKD(T, alpha)(Outputs(s), Outputs(t), y)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_hinton_kd_at_alpha_0_is_cross_entropy_and_needs_no_teacher():
    s, y = torch.randn(5, 10), torch.randint(10, (5,))
    assert torch.equal(hinton_kd(s, torch.randn(5, 10), y, 32.0, 0.0), F.cross_entropy(s, y))
    kd0 = HintonKD(32.0, 0.0)
    assert not kd0.needs_teacher
    assert torch.equal(kd0(Outputs(s), None, y), F.cross_entropy(s, y))
    assert HintonKD().needs_teacher  # the port's T 32, alpha 1: soft targets only
    assert HintonKD(32.0, 1.0)(Outputs(s), Outputs(s.clone()), y).item() == pytest.approx(0.0, abs=1e-6)


def test_nst_mmd_equals_the_definition_and_vanishes_for_identical_features():
    g = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 4, 4, generator=g)

    def brute(a: torch.Tensor, b: torch.Tensor) -> float:  # Huang & Wang Eq. 4, polynomial kernel d=2, c=0
        total = 0.0
        for n in range(a.shape[0]):
            s = [v / v.norm() for v in a[n].flatten(1)]
            t = [v / v.norm() for v in b[n].flatten(1)]

            def k(u: list, v: list) -> float:
                return sum(float(x @ z) ** 2 for x in u for z in v) / (len(u) * len(v))

            total += k(s, s) + k(t, t) - 2 * k(s, t)
        return total / a.shape[0]

    assert nst_mmd2(fs, ft).item() == pytest.approx(brute(fs, ft), rel=1e-5)
    assert nst_mmd2(fs, fs).item() == pytest.approx(0.0, abs=1e-6)
    y = torch.tensor([1, 2])
    logits = torch.randn(2, 10, generator=g)
    loss = NST(12.5)(Outputs(logits, [fs, fs]), Outputs(logits, [ft, ft]), y)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item() + 12.5 * 2 * brute(fs, ft), rel=1e-5)
    with pytest.raises(ConfigError, match="same spatial size"):
        nst_mmd2(fs, torch.randn(2, 3, 2, 2))


# ---- networks and the teacher ---------------------------------------------------------------------------------
def _spec(arch: str = BEST, space: str = "nb201", channels: int = 4, layers: int = 1, classes: int = 10,
          in_channels: int = 1) -> NetworkSpec:
    return NetworkSpec(space, arch, channels, layers, classes, in_channels)


@pytest.mark.parametrize("space,arch,layers", [("nb201", BEST, 2), ("darts", "DARTS_V2", 3)])
def test_stage_features_are_the_three_stage_outputs(space, arch, layers):
    net = _spec(arch, space, 4, layers, in_channels=3).build()
    out = net(torch.randn(2, 3, 16, 16), features=True)
    assert out.logits.shape == (2, 10)
    assert [f.shape[-1] for f in out.features] == [16, 8, 4]
    assert net(torch.randn(2, 3, 16, 16)).features == []  # captured only when asked


def _teacher(tmp_path, arch: str = BEST) -> Teacher:
    torch.manual_seed(0)
    student = _spec(arch).build()
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in student.state_dict().items()},
                "lightning_nas": {"method": "lightning_nas.methods.training.cell_training.TrainCell",
                                  "network": student.spec.to_dict()}}, path)
    return Teacher.from_checkpoint(path)


def test_teacher_gets_no_gradient_stays_in_eval_mode_and_is_not_trained(tmp_path):
    teacher = _teacher(tmp_path)
    before = {k: v.clone() for k, v in teacher.network.state_dict().items()}  # BN running stats included
    torch.manual_seed(1)
    student = _spec(OTHER).build().train()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    for loss_fn in (HintonKD(), NST(12.5)):
        for _ in range(3):
            x, y = torch.randn(8, 1, 8, 8), torch.randint(10, (8,))
            loss, _ = distillation_loss(student, teacher, loss_fn, x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert not teacher.network.training
            assert all(p.grad is None and not p.requires_grad for p in teacher.network.parameters())
    after = teacher.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(p.grad is not None for p in student.parameters())


def test_teacher_checkpoint_errors_name_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*teacher_nb201_cifar10.yaml"):
        Teacher.from_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        Teacher.from_checkpoint(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}, "lightning_nas": {"method": "lightning_nas.methods.bilevel.darts.DARTS"}},
               tmp_path / "darts.ckpt")
    with pytest.raises(CheckpointError, match="written by lightning_nas.methods.bilevel.darts.DARTS"):
        Teacher.from_checkpoint(tmp_path / "darts.ckpt")
    torch.save({"state_dict": {"net.x": torch.zeros(1)}, "lightning_nas": {
        "method": "lightning_nas.methods.training.cell_training.TrainCell", "network": _spec().to_dict()}},
        tmp_path / "w.ckpt")
    with pytest.raises(CheckpointError, match="does not rebuild its network"):
        Teacher.from_checkpoint(tmp_path / "w.ckpt")
    teacher = _teacher(tmp_path)
    with pytest.raises(ConfigError, match="10 classes and the student 100"):
        teacher.check_student("nb201", 100, False)
    with pytest.raises(ConfigError, match="NST compares stage features"):
        teacher.check_student("darts", 10, True)


# ---- the low-fidelity training ------------------------------------------------------------------------------
def _split(n: int = 96) -> LowFidelitySplit:
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return LowFidelitySplit.from_training_set(ImageData(images, labels), BatchAugment([0.5], [0.25], 1), 32)


def test_low_fidelity_training_is_seeded_and_leaves_the_global_rng_alone(tmp_path):
    data, recipe, teacher = _split(), LowFidelityRecipe(epochs=2, batch_size=16), _teacher(tmp_path)
    state = torch.random.get_rng_state()
    a = train_low_fidelity(_spec(OTHER), HintonKD(), teacher, data, recipe, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a == train_low_fidelity(_spec(OTHER), HintonKD(), teacher, data, recipe, seed=5)
    assert a != train_low_fidelity(_spec(OTHER), HintonKD(), teacher, data, recipe, seed=6)
    ce = train_low_fidelity(_spec(OTHER), CrossEntropy(), None, data, recipe, seed=5)
    assert ce == train_low_fidelity(_spec(OTHER), HintonKD(alpha=0.0), teacher, data, recipe, seed=5)
    assert len(data.heldout) == 32 and len(data.train) == 64 and 0 <= a["accuracy"] <= 100
    with pytest.raises(ConfigError, match="needs a teacher"):
        train_low_fidelity(_spec(OTHER), HintonKD(), None, data, recipe, seed=5)


# ---- BO strategies ----------------------------------------------------------------------------------------------
def test_cokriging_kernel_has_the_ar1_covariance_structure():
    k = CoKrigingKernel(30).double()
    with torch.no_grad():
        k.rho.fill_(0.7)
    archs = [NB201.sample(torch.Generator().manual_seed(i)) for i in range(4)]
    z = NB201.encode(archs)
    low = torch.cat([z, torch.zeros(4, 1, dtype=z.dtype)], 1)
    high = torch.cat([z, torch.ones(4, 1, dtype=z.dtype)], 1)
    with torch.no_grad():
        k_low, k_delta = k.k_low(z, z).to_dense(), k.k_delta(z, z).to_dense()
        assert torch.allclose(k(low, low).to_dense(), k_low)
        assert torch.allclose(k(low, high).to_dense(), 0.7 * k_low)
        assert torch.allclose(k(high, high).to_dense(), 0.49 * k_low + k_delta)
        assert torch.allclose(k(high, high, diag=True), torch.diagonal(0.49 * k_low + k_delta))


def test_fidelity_schedule_fits_the_budget_and_alternates():
    plan = fidelity_schedule(1000, 20, 5, 3, 10)
    assert plan[:13] == [HIGH] * 3 + [LOW] * 10
    assert plan[13:19] == [LOW, HIGH] * 3 and plan[-1] == HIGH
    cost = sum(20 if f == HIGH else 5 for f in plan)
    assert cost <= 1000 and cost + 25 > 1000
    with pytest.raises(ConfigError, match="affords no high-fidelity"):
        fidelity_schedule(10, 20, 5)


def _oracle(arch: NB201Arch) -> float:  # a smooth function of the encoding: convolutions are good
    return float(sum(op.startswith("nor_conv") for op in arch.ops)) + 0.1 * arch.op_indices()[0]


def test_gp_ucb_starts_from_the_seeded_random_cells_then_proposes_unevaluated_ones():
    strategy = GPUCB(NB201, initial_points=5, candidates=200)
    proposals = []
    for n in range(9):
        g = torch.Generator().manual_seed(mix_seed(7, n, 11))
        arch = strategy.ask(g)
        if n < 5:  # the first draw of the evaluation's generator, as random search would draw it
            assert arch == NB201.sample(torch.Generator().manual_seed(mix_seed(7, n, 11)))
        else:
            assert arch.to_string() not in {a.to_string() for a in proposals}
        proposals.append(arch)
        strategy.tell(arch, _oracle(arch))
    # the GP's picks are better than the random start on this smooth oracle
    assert max(_oracle(a) for a in proposals[5:]) > sum(_oracle(a) for a in proposals[:5]) / 5


def test_multi_fidelity_ucb_scores_each_fidelity_with_its_own_posterior():
    strategy = MultiFidelityUCB(NB201, initial_high=2, initial_low=4, candidates=100)
    plan = fidelity_schedule(2000, 200, 10, 2, 4)
    seen: dict[str, set[str]] = {HIGH: set(), LOW: set()}
    for n, fidelity in enumerate(plan[:10]):
        g = torch.Generator().manual_seed(mix_seed(1, n, 11))
        arch = strategy.ask(g, fidelity)
        if n < 6:
            assert arch == NB201.sample(torch.Generator().manual_seed(mix_seed(1, n, 11)))
        assert arch.to_string() not in seen[fidelity]  # never re-evaluated at the same fidelity
        seen[fidelity].add(arch.to_string())
        strategy.tell(arch, fidelity, _oracle(arch) * (1.0 if fidelity == HIGH else 0.5) + 3.0 * (fidelity == LOW))
    x, y = strategy.training_data()
    assert x.shape == (10, 31) and set(x[:, -1].tolist()) == {0.0, 1.0}
    for fid in (0.0, 1.0):  # each fidelity standardised on its own
        assert abs(float(y[x[:, -1] == fid].mean())) < 1e-9


def test_cokriging_learns_the_link_between_fidelities():
    """Cells seen at both fidelities with high = an affine map of low: the fitted rho is positive and the
    high-fidelity posterior of cells seen only at low fidelity ranks them as their low-fidelity values."""
    strategy = MultiFidelityUCB(NB201)
    archs = [NB201.sample(torch.Generator().manual_seed(100 + i)) for i in range(24)]
    for i, arch in enumerate(archs):
        strategy.tell(arch, LOW, _oracle(arch))
        if i < 12:
            strategy.tell(arch, HIGH, 10.0 * _oracle(arch) + 50.0)
    model = strategy.model(seed=0)
    assert model.covar_module.rho.item() > 0
    assert model.likelihood.noise.shape[-1] == 2  # one white-noise level per fidelity
    with torch.no_grad():
        mean = model.posterior(strategy._inputs(archs[12:], HIGH)).mean.squeeze(-1)
    from scipy.stats import kendalltau

    assert kendalltau(mean.tolist(), [_oracle(a) for a in archs[12:]]).statistic > 0.5


# ---- the searches through the CLI ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    assert main(["fit", "--config", str(TINY / "teacher_nb201.yaml"), "--run.root", str(root)]) == 0
    return next((root / "tiny_teacher_nb201").iterdir())


def test_a_teacher_is_named_by_its_run_or_its_run_names_directory(teacher_run, tmp_path):
    """The shipped teacher configs pin no run.version (a second teacher run is not refused): the search config
    names the run name's directory, which must hold exactly one finished run."""
    ckpt = teacher_run / "checkpoints" / "last.ckpt"
    assert Teacher.resolve(teacher_run) == ckpt and Teacher.resolve(teacher_run.parent) == ckpt
    assert Teacher.from_checkpoint(teacher_run.parent).source == str(ckpt)
    import shutil

    shutil.copytree(teacher_run, tmp_path / "runs" / "second")
    shutil.copytree(teacher_run, tmp_path / "runs" / "first")
    with pytest.raises(ConfigError, match=r"holds 2 finished teacher runs \(first, second\): name one"):
        Teacher.resolve(tmp_path / "runs")
    (tmp_path / "empty" / "v1").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="holds no finished run"):
        Teacher.from_checkpoint(tmp_path / "empty")
    for config in ("teacher_nb201_cifar10.yaml", "teacher_nb201_cifar10_cpu.yaml"):
        assert "version" not in (REPO / "experiments" / "mf_kd" / config).read_text().split("run:")[-1]


def test_teacher_then_distilled_training_through_the_cli(teacher_run, tmp_path, capsys):
    ckpt = teacher_run / "checkpoints" / "last.ckpt"
    meta = torch.load(ckpt, weights_only=True)["lightning_nas"]
    assert meta["network"]["arch"] == BEST and meta["network"]["channels"] == 4
    student = run_in_process("fit", "--config", str(TINY / "distill_nb201.yaml"), "--run.root", str(tmp_path),
                             "--model.init_args.teacher", str(ckpt), capsys=capsys)
    summary = json.loads((student / "summary.json").read_text())
    assert summary["loss"] == "HintonKD(T=32, alpha=1)" and summary["teacher"] == str(ckpt)
    assert summary["genotype"] == OTHER and "val/acc" in summary["metrics"]
    # the teacher is not part of the student's checkpoint
    keys = torch.load(student / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(k.startswith("net.") for k in keys) and len(keys) == len(CellNetwork(_spec(OTHER)).state_dict())


def test_distilled_training_resumes_exactly(teacher_run, tmp_path, capsys):
    """Cut mid-way through the second epoch of a KD training and resumed: the same weights as uninterrupted."""
    full, resumed, _ = uninterrupted_and_resumed(TINY / "distill_nb201.yaml", 6, tmp_path, capsys,
                                                 "--model.init_args.teacher",
                                                 str(teacher_run / "checkpoints" / "last.ckpt"),
                                                 "--trainer.max_epochs", "2")
    assert_same_weights(full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


def test_distillation_without_a_teacher_is_refused(tmp_path, capsys):
    assert main(["fit", "--config", str(TINY / "distill_nb201.yaml"), "--run.root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "distils from a teacher: set model.teacher" in err
    assert not any(tmp_path.rglob("config.yaml"))  # nothing left behind


def _state(run) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["lightning_nas"]["search_state"]


def test_mfkd_search_runs_both_fidelities_and_resumes_exactly(teacher_run, tmp_path, capsys):
    """Interrupted after 4 of 7 evaluations (two GP fits still ahead), then resumed: the same search."""
    teacher = str(teacher_run / "checkpoints" / "last.ckpt")
    full, resumed, mid = uninterrupted_and_resumed(TINY / "mfkd_nb201.yaml", 4, tmp_path, capsys,
                                                   "--model.init_args.teacher", teacher)
    history = _state(full)["history"]
    assert [r["fidelity"] for r in history] == [HIGH, HIGH, LOW, LOW, LOW, LOW, HIGH]
    summary = json.loads((full / "summary.json").read_text())
    assert summary["epochs_spent"] == 34 and summary["high_fidelity_evaluations"] == 3
    best = max((r for r in history if r["fidelity"] == HIGH), key=lambda r: r["fitness"])
    assert summary["genotype"] == best["arch"]  # the answer is the best observed high-fidelity cell
    lows = [r for r in history if r["fidelity"] == LOW]
    assert all(0 <= r["fitness"] <= 100 and r["cost_epochs"] == 1 for r in lows)
    assert len(torch.load(mid, weights_only=False)["lightning_nas"]["search_state"]["history"]) == 4
    assert _state(resumed) == _state(full)


def test_bo_search_resumes_exactly(tmp_path, capsys):
    full, resumed, _ = uninterrupted_and_resumed(TINY / "bo_nb201.yaml", 5, tmp_path, capsys)
    assert _state(resumed) == _state(full)
    assert len(_state(full)["history"]) == 8
    assert len({r["arch"] for r in _state(full)["history"]}) == 8
