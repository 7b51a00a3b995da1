"""MiLeNAS, SDARTS, NA-DARTS and the Hessian-eigenvalue callback: the checks that catch a wrong implementation."""

from __future__ import annotations

import json
from functools import partial

import torch
import torch.nn.functional as F
from cli_utils import REPO, run_in_process, weights

from lightning_nas.callbacks.landscape import dominant_eigenvalue
from lightning_nas.methods import DARTS, NADARTS, SDARTS, MiLeNAS
from lightning_nas.methods.bilevel.sdarts import project_to_simplex
from lightning_nas.search_spaces.darts import PRIMITIVES, DartsSupernet

TINY = REPO / "experiments" / "tiny"
NO_NONE = [p for p in PRIMITIVES if p != "none"]


def _batches(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g))
            for _ in range(n)]


def _model(cls, **kwargs):
    torch.manual_seed(0)
    factory = partial(DartsSupernet, channels=4, layers=3, alpha_init_std=1.0, **kwargs.pop("space", {}))
    return cls(supernet=factory, num_classes=3, in_channels=3, **kwargs).double()


def test_milenas_gradient_is_train_plus_lambda_val():
    model = _model(MiLeNAS, lambda_val=0.5)
    (x_t, y_t), (x_v, y_v) = _batches()
    alphas = model.supernet.arch_parameters()
    got, _ = model.architecture_gradient(x_t, y_t, x_v, y_v)
    g_train = torch.autograd.grad(F.cross_entropy(model.supernet(x_t), y_t), alphas)
    g_val = torch.autograd.grad(F.cross_entropy(model.supernet(x_v), y_v), alphas)
    for a, t, v in zip(got, g_train, g_val):
        assert torch.allclose(a, t + 0.5 * v, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(got[0], g_val[0])  # the train term is really there


def test_projection_onto_the_simplex():
    w = torch.tensor([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.2], [2.0, 0.0, 0.0]])
    p = project_to_simplex(w)
    assert torch.allclose(p.sum(-1), torch.ones(3)) and (p >= 0).all()
    assert torch.allclose(p[0], torch.tensor([0.5, 0.0, 0.9]) / 1.4)
    assert torch.equal(p[1], torch.tensor([1.0, 0.0, 0.0]))  # an all-negative row: its argmax gets 1


def test_sdarts_random_perturbation_within_epsilon_on_simplex_alpha_untouched():
    model = _model(SDARTS, perturbation="random", space={"primitives": NO_NONE})
    base = {k: v.detach() for k, v in model.supernet.mixing_weights().items()}
    eps = model.epsilon()
    assert eps == 0.03
    delta = model._random_delta(base, eps, stream=1)
    assert all(d.abs().max() <= eps and d.abs().max() > eps / 2 for d in delta.values())
    before = [a.detach().clone() for a in model.supernet.arch_parameters()]
    (x, y), = _batches(1)
    mixing = model.perturbed_mixing(x, y)
    for k, m in mixing.items():
        assert torch.allclose(m.sum(-1), torch.ones(m.shape[0], dtype=m.dtype)) and (m >= 0).all()
        assert torch.allclose(m, project_to_simplex(base[k] + delta[k]))
    model.weight_logits(x, y).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(model.supernet.arch_parameters(), before))
    assert all(a.grad is None for a in model.supernet.arch_parameters())  # the weight step never moves alpha


def test_sdarts_adversarial_raises_the_loss_or_falls_back():
    model = _model(SDARTS, perturbation="adversarial", space={"primitives": NO_NONE})
    net = model.supernet
    raised = fell_back = 0
    for seed in range(4):
        (x, y), = _batches(1, seed=seed)
        base = {k: v.detach() for k, v in net.mixing_weights().items()}
        stats = [b.clone() for b in net.buffers()]
        mixing = model.perturbed_mixing(x, y)
        assert net.training and all(torch.equal(a, b) for a, b in zip(net.buffers(), stats))
        net.eval()
        with torch.no_grad():
            clean, attacked = (F.cross_entropy(net(x, mixing=m), y) for m in (base, mixing))
        net.train()
        if all(torch.equal(mixing[k], base[k]) for k in base):
            fell_back += 1
        else:
            assert attacked > clean
            raised += 1
            for k in base:  # within epsilon of the clean weights after projection, and on the simplex
                assert torch.allclose(mixing[k].sum(-1), torch.ones(mixing[k].shape[0], dtype=torch.float64))
    assert raised + fell_back == 4 and raised >= 1
    assert fell_back == model.attack_fallbacks


def test_na_darts_neighbours_move_the_strongest_mass_and_keep_gradients():
    model = _model(NADARTS, neighbours=3, distance=2)
    mixing = model.supernet.mixing_weights()
    nb = model.neighbour_mixing(mixing, torch.Generator().manual_seed(0))
    for k in mixing:
        changed = (nb[k] - mixing[k]).abs().sum(-1) > 0
        assert int(changed.sum()) == 2
        for e in changed.nonzero().flatten().tolist():
            assert nb[k][e, mixing[k][e].argmax()] == 0
        assert torch.allclose(nb[k].sum(-1), torch.ones(nb[k].shape[0], dtype=torch.float64))
    g = torch.autograd.grad(sum(v.sum() ** 2 for v in nb.values()), model.supernet.arch_parameters())
    assert all(t.abs().sum() > 0 for t in g)


def test_na_darts_with_k0_is_darts_step_for_step(tmp_path, capsys):
    runs = {}
    for name, extra in (("darts", []), ("na", ["--model.class_path", "lightning_nas.methods.NADARTS",
                                                "--model.init_args.neighbours", "0"])):
        prefix = tmp_path / name
        probe = json.dumps([{"class_path": "tests.probes.AlphaRecorder", "init_args": {"prefix": str(prefix)}}])
        run = run_in_process("fit", "--config", str(TINY / "darts_first_order.yaml"), "--run.root",
                             str(tmp_path / name), "--trainer.callbacks", probe, *extra, capsys=capsys)
        runs[name] = (run, (tmp_path / f"{name}.rank0.jsonl").read_text().splitlines())
    assert runs["darts"][1] == runs["na"][1]  # identical alphas after every step
    a, b = (weights(r / "checkpoints" / "last.ckpt") for r, _ in runs.values())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((runs["na"][0] / "summary.json").read_text())["method"].endswith("NADARTS")


def test_power_iteration_matches_the_exact_hessian_eigenvalue():
    model = _model(DARTS)
    net = model.supernet
    (x, y), = _batches(1)
    alphas = net.arch_parameters()

    def loss_of(flat):
        n = alphas[0].numel()
        mixing = {"normal": F.softmax(flat[:n].view_as(alphas[0]), -1),
                  "reduce": F.softmax(flat[n:].view_as(alphas[1]), -1)}
        return F.cross_entropy(net(x, mixing=mixing), y)

    flat = torch.cat([a.detach().flatten() for a in alphas])
    eigs = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat, vectorize=True))
    exact = eigs[eigs.abs().argmax()].item()
    got, iters = dominant_eigenvalue(lambda: F.cross_entropy(net(x), y), alphas, iterations=2000, tol=1e-12,
                                     generator=torch.Generator().manual_seed(0))
    assert abs(got - exact) <= 1e-6 * abs(exact)
    shifted, _ = dominant_eigenvalue(lambda: F.cross_entropy(net(x), y), alphas, iterations=2000, tol=1e-12,
                                     generator=torch.Generator().manual_seed(0), weight_decay=1e-3)
    assert abs(shifted - (exact + 1e-3)) <= 1e-6 * abs(exact)


def test_milenas_early_stop_rule_on_published_cells():
    from lightning_nas.methods.bilevel.milenas import reached_early_stop
    from lightning_nas.search_spaces import get_space
    from lightning_nas.search_spaces.darts import PUBLISHED

    darts = get_space("darts")
    v2 = PUBLISHED["DARTS_V2"]
    assert darts.conv_ops(v2) == {"normal": 6, "reduce": 0} and reached_early_stop(darts, v2)
    assert not reached_early_stop(darts, PUBLISHED["DARTS_V1"])  # 4 conv ops in its normal cell


def test_landscape_and_step_time_callbacks_log_every_epoch(tmp_path, capsys):
    import csv

    callbacks = json.dumps([{"class_path": "lightning_nas.callbacks.HessianEigenvalue",
                             "init_args": {"iterations": 5}},
                            {"class_path": "lightning_nas.callbacks.StepTime"}])
    run = run_in_process("fit", "--config", str(TINY / "darts_first_order.yaml"), "--run.root", str(tmp_path),
                         "--trainer.callbacks", callbacks, "--data.init_args.eval_batch_size", "64", capsys=capsys)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    eig = [float(r["landscape/hessian_eig"]) for r in rows if r.get("landscape/hessian_eig")]
    step = [float(r["perf/step_time_s"]) for r in rows if r.get("perf/step_time_s")]
    assert len(eig) == len(step) == 2 and all(s > 0 for s in step) and all(e == e for e in eig)
