"""Golden check: DARTS's second-order alpha gradient against an exact double-backward reference (float64).

The finite-difference scale is tiny here (1e-6 / ||v||): at DARTS's 0.01, ReLU and max-pool kinks put
the difference off by O(1) even when the code is right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from lightning_nas.methods.darts import DARTS

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
