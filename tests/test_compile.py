"""The opt-in compiled step (issue 26): ``model.compile`` compiles the supernet that both steps of a bilevel search
run; the default path stays eager."""

from __future__ import annotations

import json
import os

import pytest
import torch
from cli_utils import run_in_process, weights
from conftest import REPO

from lightning_nas.cli import main
from lightning_nas.core.module import compile_options
from lightning_nas.errors import ConfigError

TINY = REPO / "experiments" / "tiny" / "darts_nb201.yaml"
FIVE_STEPS = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "0")


def _five_steps(tmp_path, capsys, name: str, compile_spec: str):
    run = run_in_process("fit", "--config", str(TINY), "--run.root", str(tmp_path / name), *FIVE_STEPS,
                         "--model.init_args.compile", compile_spec, capsys=capsys)
    return weights(run / "checkpoints" / "last.ckpt")


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def test_compiled_steps_equal_eager_steps(tmp_path, capsys):
    """AOTAutograd's graphs of the forward and backward, run by the eager backend: five search steps give the very
    alphas and weights of eager steps (the inductor backend: see the next test)."""
    eager = _five_steps(tmp_path, capsys, "eager", "false")
    compiled = _five_steps(tmp_path, capsys, "compiled", json.dumps({"backend": "aot_eager"}))
    assert _max_difference(eager, compiled) == 0.0


@pytest.mark.skipif(os.environ.get("LIGHTNING_NAS_INDUCTOR_TESTS") != "1",
                    reason="compiling the tiny supernet with inductor takes ~4 minutes on 2 CPU cores: set "
                           "LIGHTNING_NAS_INDUCTOR_TESTS=1 to run it")
def test_inductor_steps_equal_eager_steps_to_float32_rounding(tmp_path, capsys):
    """Inductor fuses and reorders float32 sums: after five steps the weights differ by at most 1e-6 (measured
    1.2e-7; alphas 3e-9)."""
    eager = _five_steps(tmp_path, capsys, "eager", "false")
    compiled = _five_steps(tmp_path, capsys, "inductor", "true")
    assert _max_difference(eager, compiled) <= 1e-6


def test_the_default_stays_eager_and_bad_options_are_refused():
    from lightning_nas.methods import DARTS, GDAS
    from lightning_nas.search_spaces.nb201 import NB201Supernet

    model = DARTS(supernet=lambda n, c: NB201Supernet(n, c, channels=4, cells_per_stage=1))
    assert model.compile_spec is False and model.supernet._compiled_call_impl is None
    assert compile_options(True, torch.device("cuda")) == {"mode": "reduce-overhead"}
    assert compile_options(True, torch.device("cpu")) == {}
    with pytest.raises(ConfigError, match="unknown torch.compile argument"):
        compile_options({"modes": "max-autotune"}, torch.device("cpu"))
    for spec in (True, {}, {"backend": "aot_eager"}):  # an empty mapping compiles with the defaults, too
        with pytest.raises(ConfigError, match="GDAS runs another sub-network"):
            GDAS(supernet=lambda n, c: NB201Supernet(n, c, channels=4, cells_per_stage=1), compile=spec)


@pytest.mark.parametrize("cls, kwargs, identical", [
    (torch.optim.SGD, {"foreach": True}, True),
    (torch.optim.SGD, {"fused": True}, True),
    (torch.optim.Adam, {"foreach": True}, True),
    (torch.optim.Adam, {"fused": True}, False),  # a fused kernel's own rounding (1.2e-7 after 5 steps here)
], ids=["sgd-foreach", "sgd-fused", "adam-foreach", "adam-fused"])
def test_which_multi_tensor_optimizers_equal_the_for_loop(cls, kwargs, identical):
    """The README's claim: foreach (torch's default on a GPU) changes no number of DARTS's SGD and Adam on the CPU;
    fused SGD neither; fused Adam does."""
    torch.manual_seed(0)
    shapes = [(16, 3, 3, 3), (16,), (100, 10), (7,)]
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(5)]
    hyper = ({"lr": 0.025, "momentum": 0.9, "weight_decay": 3e-4} if cls is torch.optim.SGD
             else {"lr": 3e-4, "betas": (0.5, 0.999), "weight_decay": 1e-3})

    def run(**variant):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = cls(params, **hyper, **variant)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step()
        return params

    same = all(torch.equal(a, b) for a, b in zip(run(foreach=False), run(**kwargs)))
    assert same is identical


def test_the_gpu_speed_block_composes_with_a_search_config(capsys):
    """experiments/blocks/speed/gpu.yaml (README: Speed on a GPU) adds compile, bf16 and resident images to a
    search's config."""
    import yaml

    configs = ["--config", str(REPO / "experiments" / "darts" / "nb201_cifar10.yaml"),
               "--config", str(REPO / "experiments" / "blocks" / "speed" / "gpu.yaml")]
    with pytest.raises(SystemExit) as stop:
        main(["fit", *configs, "--print_config"])
    assert stop.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["init_args"]["compile"] is True and resolved["trainer"]["precision"] == "bf16-mixed"
    assert resolved["data"]["init_args"]["resident"] == "auto"
