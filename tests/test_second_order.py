"""Golden check: DARTS's second-order alpha gradient against an exact double-backward reference (float64).

The finite-difference scale is tiny here (1e-6 / ||v||): at DARTS's 0.01, ReLU and max-pool kinks put
the difference off by O(1) even when the code is right.
"""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.darts import DARTS, check_unrollable, sgd_unrolled_step

ETA, MOMENTUM, WD = 0.05, 0.9, 3e-4


def _setup(factory, hvp_epsilon=1e-6):
    torch.manual_seed(0)
    model = DARTS(supernet=factory, num_classes=3, in_channels=3, order=2, hvp_epsilon=hvp_epsilon).double()
    net = model.supernet
    opt = torch.optim.SGD(net.weight_parameters(), lr=ETA, momentum=MOMENTUM, weight_decay=WD)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g))
               for _ in range(3)]
    # one real SGD step so momentum buffers exist, as in the middle of a search
    opt.zero_grad()
    F.cross_entropy(net(batches[2][0]), batches[2][1]).backward()
    opt.step()
    opt.zero_grad()
    return model, net, opt, batches[0], batches[1]


def _loss(net, names, weights, alphas, x, y):
    params = dict(zip(names, weights))
    params["alpha_normal"], params["alpha_reduce"] = alphas
    return F.cross_entropy(functional_call(net, params, (x,)), y)


def _exact(net, opt, train, val):
    names = [n for n, _ in net.named_weight_parameters()]
    w = [p.detach().clone().requires_grad_(True) for p in net.weight_parameters()]
    alphas = [a.detach().clone().requires_grad_(True) for a in net.arch_parameters()]
    g = torch.autograd.grad(_loss(net, names, w, alphas, *train), w, create_graph=True)
    bufs = [opt.state[p]["momentum_buffer"] for p in net.weight_parameters()]
    w_unrolled = [wi - ETA * (MOMENTUM * b + gi + WD * wi) for wi, gi, b in zip(w, g, bufs)]
    # w is held fixed: the hypergradient differentiates only through alpha (directly and via w')
    return torch.autograd.grad(_loss(net, names, w_unrolled, alphas, *val), alphas), names, w, alphas


def _rel(a, b):
    a, b = torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b])
    return ((a - b).norm() / b.norm()).item()


def test_second_order_matches_double_backward(tiny_supernet_factory):
    model, net, opt, train, val = _setup(tiny_supernet_factory)
    before = [p.detach().clone() for p in net.parameters()]
    grads, _ = model.unrolled_gradient(*train, *val, optimizer=opt)
    exact, *_ = _exact(net, opt, train, val)
    assert _rel(grads, exact) < 1e-8
    # the weights are restored exactly
    for p, q in zip(net.parameters(), before):
        assert torch.equal(p, q)


def test_implicit_term_matches_mixed_second_derivative(tiny_supernet_factory):
    """hvp on its own, for the vector the algorithm uses: v = dL_val(w', alpha)/dw'.

    (A random v moves every pre-activation and crosses ReLU kinks: its error then grows linearly with
    the scale, which says nothing about the code.)"""
    model, net, opt, train, val = _setup(tiny_supernet_factory)
    names = [n for n, _ in net.named_weight_parameters()]
    w = [p.detach().clone().requires_grad_(True) for p in net.weight_parameters()]
    alphas = [a.detach().clone().requires_grad_(True) for a in net.arch_parameters()]
    g = torch.autograd.grad(_loss(net, names, w, alphas, *train), w)
    bufs = [opt.state[p]["momentum_buffer"] for p in net.weight_parameters()]
    w_unrolled = [(wi - ETA * (MOMENTUM * b + gi + WD * wi)).detach().requires_grad_(True)
                  for wi, gi, b in zip(w, g, bufs)]
    v = list(torch.autograd.grad(_loss(net, names, w_unrolled, alphas, *val), w_unrolled))
    w0 = [p.detach().clone() for p in net.weight_parameters()]
    hvp = model.hessian_vector_product(v, w0, *train)
    g = torch.autograd.grad(_loss(net, names, w, alphas, *train), w, create_graph=True)
    exact = torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), alphas)
    assert _rel(hvp, exact) < 1e-8


def test_second_order_differs_from_first_order(tiny_supernet_factory):
    """The implicit term is not silently dropped (NASLib's failure): it changes the gradient measurably."""
    model, net, opt, train, val = _setup(tiny_supernet_factory)
    second, _ = model.unrolled_gradient(*train, *val, optimizer=opt)
    model.order = 1
    first, _ = model.architecture_gradient(*train, *val)
    assert _rel(first, second) > 1e-3


def test_default_scale_is_001_over_norm(tiny_supernet_factory):
    model = DARTS(supernet=tiny_supernet_factory, num_classes=3, in_channels=3, order=2)
    assert model.hvp_epsilon == 0.01


# ---- the unroll is the SGD step actually taken, for every SGD setting; other optimizers are refused ----------
SGD_SETTINGS = {
    "dampening": dict(lr=ETA, momentum=MOMENTUM, weight_decay=WD, dampening=0.3),
    "nesterov_first_step": dict(lr=ETA, momentum=MOMENTUM, weight_decay=WD, nesterov=True),
    "plain_sgd": dict(lr=ETA, weight_decay=WD),
    "two_groups": dict(lr=ETA, momentum=MOMENTUM, weight_decay=WD, nesterov=True),
}


def _opt(net, name):
    kwargs = SGD_SETTINGS[name]
    weights = net.weight_parameters()
    if name == "two_groups":  # another learning rate and weight decay for half the tensors
        half = len(weights) // 2
        return torch.optim.SGD([{"params": weights[:half]}, {"params": weights[half:], "lr": 0.2 * ETA,
                                                             "weight_decay": 0.0}], **kwargs)
    return torch.optim.SGD(weights, **kwargs)


def _sgd_formula(opt, p, w, g):
    """torch.optim.SGD's update of one parameter, written differentiably."""
    group = next(gr for gr in opt.param_groups if any(q is p for q in gr["params"]))
    mu, damp, wd = group["momentum"], group["dampening"], group["weight_decay"]
    d = g + wd * w
    buf = opt.state.get(p, {}).get("momentum_buffer")
    if mu:
        buf = d if buf is None else mu * buf + (1 - damp) * d
        d = d + mu * buf if group["nesterov"] else buf
    return w - group["lr"] * d


@pytest.mark.parametrize("setting", list(SGD_SETTINGS))
def test_second_order_unrolls_every_sgd_setting_exactly(tiny_supernet_factory, setting):
    torch.manual_seed(0)
    model = DARTS(supernet=tiny_supernet_factory, num_classes=3, in_channels=3, order=2, hvp_epsilon=1e-6).double()
    net = model.supernet
    opt = _opt(net, setting)
    g = torch.Generator().manual_seed(1)
    train, val, warm = [(torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64),
                         torch.randint(0, 3, (6,), generator=g)) for _ in range(3)]
    if setting != "nesterov_first_step":  # momentum buffers exist, as in the middle of a search
        F.cross_entropy(net(warm[0]), warm[1]).backward()
        opt.step()
        opt.zero_grad()
    weights = net.weight_parameters()
    # the unrolled weights are the real optimizer step on the train batch
    real = copy.deepcopy(net)
    real_opt = _opt(real, setting)
    real_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict shares the buffers
    F.cross_entropy(real(train[0]), train[1]).backward()
    real_opt.step()
    grads = torch.autograd.grad(F.cross_entropy(net(train[0]), train[1]), weights)
    originals = [p.detach().clone() for p in weights]
    with torch.no_grad():
        sgd_unrolled_step(opt, weights, grads)
    for p, q in zip(weights, real.weight_parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-12)
    with torch.no_grad():
        for p, w0 in zip(weights, originals):
            p.copy_(w0)
    # the hypergradient against double backward through that step
    names = [n for n, _ in net.named_weight_parameters()]
    w = [p.detach().clone().requires_grad_(True) for p in weights]
    alphas = [a.detach().clone().requires_grad_(True) for a in net.arch_parameters()]
    gw = torch.autograd.grad(_loss(net, names, w, alphas, *train), w, create_graph=True)
    unrolled = [_sgd_formula(opt, p, wi, gi) for p, wi, gi in zip(weights, w, gw)]
    exact = torch.autograd.grad(_loss(net, names, unrolled, alphas, *val), alphas)
    got, _ = model.unrolled_gradient(*train, *val, optimizer=opt)
    assert _rel(got, exact) < 1e-8


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, partial(torch.optim.SGD, lr=0.1, maximize=True)])
def test_second_order_refuses_an_optimizer_it_cannot_unroll(tiny_supernet_factory, optimizer):
    model = DARTS(supernet=tiny_supernet_factory, num_classes=3, in_channels=3, order=2, weight_optimizer=optimizer)
    opt = optimizer(model.supernet.weight_parameters())
    with pytest.raises(ConfigError, match="order 2"):
        check_unrollable(opt)
    first = DARTS(supernet=tiny_supernet_factory, num_classes=3, in_channels=3, order=1, weight_optimizer=optimizer)
    check_unrollable(torch.optim.SGD(first.supernet.weight_parameters(), lr=0.1))  # first order needs no unroll


def _official_darts_v2(net, opt, train, val, r=0.01):
    """AutoDL's DARTS-V2 / DARTS's architect restated: w' = w - lr (mu buf + g + wd w) (buf zero before the first
    step, nesterov ignored), a copy of the net with w', then dalpha - lr * hvp with central differences around w,
    R = r / ||v||."""
    lr, mu, wd = (opt.param_groups[0][k] for k in ("lr", "momentum", "weight_decay"))
    weights, alphas = net.weight_parameters(), net.arch_parameters()
    g = torch.autograd.grad(F.cross_entropy(net(train[0]), train[1]), weights)
    moment = [mu * opt.state[p]["momentum_buffer"] if p in opt.state else torch.zeros_like(p) for p in weights]
    unrolled = copy.deepcopy(net)
    with torch.no_grad():
        for q, p, m, gi in zip(unrolled.weight_parameters(), weights, moment, g):
            q.copy_(p - lr * (m + gi + wd * p))
    loss = F.cross_entropy(unrolled(val[0]), val[1])
    grads = torch.autograd.grad(loss, unrolled.arch_parameters() + unrolled.weight_parameters())
    dalpha, v = grads[:len(alphas)], grads[len(alphas):]
    R = r / torch.cat([t.flatten() for t in v]).norm()
    with torch.no_grad():
        for p, vi in zip(weights, v):
            p.add_(R * vi)
    gp = torch.autograd.grad(F.cross_entropy(net(train[0]), train[1]), alphas)
    with torch.no_grad():
        for p, vi in zip(weights, v):
            p.sub_(2 * R * vi)
    gn = torch.autograd.grad(F.cross_entropy(net(train[0]), train[1]), alphas)
    with torch.no_grad():
        for p, vi in zip(weights, v):
            p.add_(R * vi)
    return [da - lr * (a - b) / (2 * R) for da, a, b in zip(dalpha, gp, gn)]


@pytest.mark.parametrize("fresh", [False, True], ids=["with-momentum-buffer", "first-step"])
def test_official_unroll_equals_the_darts_v2_formula_with_nesterov_sgd(tiny_supernet_factory, fresh):
    model, net, opt, train, val = _setup(tiny_supernet_factory, hvp_epsilon=0.01)
    model.unroll = "official"
    nesterov = torch.optim.SGD(net.weight_parameters(), lr=ETA, momentum=MOMENTUM, weight_decay=WD, nesterov=True)
    if not fresh:
        nesterov.load_state_dict({"state": opt.state_dict()["state"], "param_groups": nesterov.state_dict()[
            "param_groups"]})
    ours, _ = model.unrolled_gradient(*train, *val, optimizer=nesterov)
    reference = _official_darts_v2(net, nesterov, train, val)
    assert _rel(ours, reference) < 1e-9
    model.unroll = "exact"  # the optimizer's own nesterov step gives another hypergradient
    exact, _ = model.unrolled_gradient(*train, *val, optimizer=nesterov)
    assert _rel(exact, reference) > 1e-3


def test_official_unroll_refuses_dampening(tiny_supernet_factory):
    model, net, *_ = _setup(tiny_supernet_factory)
    damped = torch.optim.SGD(net.weight_parameters(), lr=ETA, momentum=MOMENTUM, dampening=0.1)
    with pytest.raises(ConfigError, match="dampening"):
        check_unrollable(damped, "official")
    check_unrollable(damped, "exact")
