"""A small registry of training-free proxies: ``name -> score(network, inputs, targets) -> float``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import nn

from lightning_nas.errors import ConfigError

Proxy = Callable[[nn.Module, torch.Tensor, Optional[torch.Tensor]], float]
PROXIES: dict[str, Proxy] = {}


def register_proxy(name: str) -> Callable[[Proxy], Proxy]:
    """Decorator: make a proxy available by name to configs (``model.proxy``) and scripts."""

    def add(fn: Proxy) -> Proxy:
        if name in PROXIES:
            raise ValueError(f"a proxy named {name!r} is already registered")
        PROXIES[name] = fn
        return fn

    return add


def get_proxy(name: str) -> Proxy:
    if name not in PROXIES:
        raise ConfigError(f"unknown training-free proxy {name!r}; registered: {sorted(PROXIES)}")
    return PROXIES[name]
