"""Training-free proxies: scores of untrained networks, behind a small registry (``get_proxy(name)``)."""

from lightning_nas.proxies.naswot import naswot_kernel, naswot_score
from lightning_nas.proxies.registry import PROXIES, get_proxy, register_proxy

__all__ = ["PROXIES", "get_proxy", "naswot_kernel", "naswot_score", "register_proxy"]
